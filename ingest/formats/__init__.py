"""Format-specific parsing behind `ingest.parse.parse_file`: checks, converters and extractors."""
