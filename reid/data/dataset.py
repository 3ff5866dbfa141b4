"""A torch ``Dataset`` over records: (image tensor, pid, camid, index)."""

from __future__ import annotations

from torch.utils.data import Dataset

from .images import read_image
from .records import ImageRecord


class ImageDataset(Dataset):
    def __init__(self, records: list[ImageRecord], transform):
        self.records, self.transform = records, transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        return self.transform(read_image(record.path)), record.pid, record.camid, index
