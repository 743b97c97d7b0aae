"""Row schemas of the dataset tables (DESIGN.md "Rows").

The frames table holds every image the pipeline keeps: crops made by processing and thumbnails
collected by ingest alike, so one SQL view and one loader serve them all.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

_TS = pa.timestamp("ms", tz="UTC")
# `channel` is also the shard's folder (channel=<c>): pandas and pyarrow add hive folders as
# dictionary columns and refuse to merge one with a plain string column of the same name, so the
# column is dictionary-encoded too (and smaller). DuckDB and `datasets` read it as a string.
CHANNEL = pa.dictionary(pa.int32(), pa.string())

# Bumped when a table's columns change meaning or type; written into every shard's Parquet
# metadata under SCHEMA_KEY. Readers refuse a newer version and name the fix.
SCHEMA_VERSION = 1
SCHEMA_KEY = b"stream2dataset.schema_version"

FRAME_KINDS = ("facecam", "face", "aligned_face", "silhouette", "person", "person_cutout", "thumbnail", "frame")

FRAME_SCHEMA = pa.schema([
    ("frame_id", pa.string()),        # stable: hash of segment id + frame index + kind
    ("channel", CHANNEL),
    ("platform", pa.string()),
    ("segment_id", pa.string()),
    ("source_id", pa.string()),       # the platform's video id, when there is one
    ("title", pa.string()),
    ("timestamp", _TS),
    ("frame_index", pa.int32()),
    ("kind", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("image", pa.binary()),
    ("image_format", pa.string()),    # png | jpeg | webp
    ("mask", pa.binary()),
    ("crop_box", pa.list_(pa.int32(), 4)),  # x, y, w, h in source pixels
    ("detector", pa.string()),
    ("score", pa.float32()),
    ("phash", pa.uint64()),
    ("dup_of", pa.string()),
    ("transforms", pa.list_(pa.string())),
    ("config_hash", pa.string()),
    ("layout", pa.string()),          # the window's facecam layout: overlay | full_frame | unknown
    ("layout_confidence", pa.float32()),
])


def frame_id(segment_id: str, frame_index: int, kind: str) -> str:
    return hashlib.sha256(f"{segment_id}\0{frame_index}\0{kind}".encode()).hexdigest()[:24]


# Why frames were not kept, counted per segment and output kind (datatrove-style drop reasons):
# dataset/drops/channel=<c>/date=<d>/<shard>.parquet.
DROP_SCHEMA = pa.schema([
    ("segment_id", pa.string()),
    ("channel", CHANNEL),
    ("platform", pa.string()),
    ("timestamp", _TS),               # the segment's start
    ("reason", pa.string()),          # no_face | low_score | too_small | blurred | no_person | ...
    ("count", pa.int64()),
])

# Near-duplicate links across segments, written by the dedup pass (dataset/dups/*.parquet):
# a frame listed here is a duplicate of `dup_of` (the earliest kept frame within the radius).
DUP_SCHEMA = pa.schema([
    ("frame_id", pa.string()),
    ("dup_of", pa.string()),
    ("distance", pa.int8()),          # Hamming distance between the two pHashes
])

# Identity embeddings of face crops (processing/identity.py), one row per frame and model:
# dataset/embeddings/channel=<c>/date=<d>/<shard>.parquet, the frame's own partition. A table of its
# own (DESIGN.md "Rows": model outputs are not fields of the frame record); the catalog's
# `embeddings` view types `vector` as FLOAT[128] for DuckDB's array functions.
EMBEDDING_DIM = 128
EMBEDDING_SCHEMA = pa.schema([
    ("frame_id", pa.string()),
    ("model", pa.string()),           # dlib_resnet_v1
    ("vector", pa.list_(pa.float32(), EMBEDDING_DIM)),
])
