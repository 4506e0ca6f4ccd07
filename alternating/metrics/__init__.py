"""Host-side metrics: per-phase aggregation, records, writers, timeline, progress, tables.

Everything here runs on the host, between device steps, on values the loop
has already fetched. One module per concern:

* :mod:`.tables`: per-phase aggregation (:func:`aggregate`, :class:`StepTable`)
  and the non-finite check;
* :mod:`.records`: the run's per-step records kept on the device until a log
  or the schedule reads them;
* :mod:`.files`: ``metrics.jsonl``, TensorBoard events and ``results.json``
  (:class:`MetricWriter`, :func:`read_jsonl`, :func:`write_results`);
* :mod:`.timeline`: which phase ran each step (``timeline.jsonl``);
* :mod:`.console`: the progress bar and the tables printed at start and end.
"""

from alternating.metrics.console import Progress, format_table
from alternating.metrics.files import (MetricWriter, Segment, read_jsonl, truncate_jsonl,
                                       write_results)
from alternating.metrics.tables import (Record, StepTable, aggregate, first_nonfinite,
                                        is_counter, to_float)
from alternating.metrics.timeline import TimelineRecorder

__all__ = ["MetricWriter", "Progress", "Record", "Segment", "StepTable", "TimelineRecorder",
           "aggregate", "first_nonfinite", "format_table", "is_counter", "read_jsonl",
           "to_float", "truncate_jsonl", "write_results"]
