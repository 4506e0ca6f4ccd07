"""Data: embedded TFDS datasets, task transforms, training streams, eval batches.

Importing this package registers the embedded TFDS builders (`digits`,
`mnist1d`), so `tfds.data_source('digits', data_dir=...)` works once
`prepare('digits')` has built the data.
"""

from alternating.data.builders import EMBEDDED_DATASETS
from alternating.data.builders import prepare
from alternating.data.builders import resolve_data_dir
from alternating.data.builders import write_generated
from alternating.data.curriculum import CurriculumStream
from alternating.data.pipeline import SPEC_KEYS
from alternating.data.pipeline import Stream
from alternating.data.pipeline import clear_cache
from alternating.data.pipeline import eval_batches
from alternating.data.pipeline import load_arrays
from alternating.data.pipeline import make_stream
from alternating.data.streaming import StreamingStream
from alternating.data.tasks import Task
from alternating.data.tasks import TaskStream
from alternating.data.tasks import make_tasks
from alternating.data.transforms import apply_transforms
from alternating.data.transforms import register_transform
from alternating.data.transforms import transform_names
from alternating.data.transforms import transformed_num_classes

__all__ = [
    'CurriculumStream',
    'EMBEDDED_DATASETS',
    'SPEC_KEYS',
    'Stream',
    'StreamingStream',
    'Task',
    'TaskStream',
    'apply_transforms',
    'clear_cache',
    'eval_batches',
    'load_arrays',
    'make_stream',
    'make_tasks',
    'prepare',
    'register_transform',
    'resolve_data_dir',
    'transform_names',
    'transformed_num_classes',
    'write_generated',
]
