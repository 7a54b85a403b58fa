"""Moved to `wydot_lab.ingest.dtg_csv` (the CSV reader beside the ODE reader); this name keeps
`from wydot_lab import dtg_csv` working."""

from wydot_lab.ingest.dtg_csv import DOWNLOAD_TIME_FORMAT, ingest_csv, to_download_csv
from wydot_lab.ingest.dtg_csv import __doc__ as _doc

__doc__ = f"{_doc}\n{__doc__}"
__all__ = ["DOWNLOAD_TIME_FORMAT", "ingest_csv", "to_download_csv"]
