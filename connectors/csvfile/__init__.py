"""CSV exports as a CRM source: ``crm: {type: csv, contacts: PATH, events: PATH, ...}``."""

from connectors.csvfile.connector import CsvConnector

__all__ = ["CsvConnector"]
