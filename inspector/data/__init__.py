"""Labeled PCB data: typed structures, readers for DeepPCB / Pascal VOC / COCO, and `data check`."""
from inspector.data.check import CheckReport, SizeStats, check_dataset, format_report
from inspector.data.readers import FORMATS, detect_format, load_dataset
from inspector.data.structures import DEEPPCB_CLASSES, DataError, Dataset, Problem, Sample, read_image

__all__ = [
    "DEEPPCB_CLASSES",
    "FORMATS",
    "CheckReport",
    "DataError",
    "Dataset",
    "Problem",
    "Sample",
    "SizeStats",
    "check_dataset",
    "detect_format",
    "format_report",
    "load_dataset",
    "read_image",
]
