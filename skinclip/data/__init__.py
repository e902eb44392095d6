"""Data ingestion: read dermatology sources, build captions, write webdataset shards."""
