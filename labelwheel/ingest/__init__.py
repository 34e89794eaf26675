"""``labelwheel ingest``: the funnel between incoming images and Label Studio.

- :mod:`~labelwheel.ingest.sources`: a folder or an S3-compatible prefix (list, read once);
- :mod:`~labelwheel.ingest.dedup`: the near-duplicate descriptor and its index;
- :mod:`~labelwheel.ingest.project`: what the project already holds (hashes, images, head);
- :mod:`~labelwheel.ingest.funnel`: the first pass (unreadable, corrupt, exact and near duplicates);
- :mod:`~labelwheel.ingest.scoring`: bits, diversity, anomaly and the import order;
- :mod:`~labelwheel.ingest.importer`: uploads, each task carrying its scores;
- :mod:`~labelwheel.ingest.state`: the ledger (no double import, resume);
- :mod:`~labelwheel.ingest.run` / :mod:`~labelwheel.ingest.cli`: one run, the command.
"""
