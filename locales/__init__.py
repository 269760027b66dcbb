"""Message catalogs: one folder per language (fr is the reference), one YAML file per feature."""

from pathlib import Path

LOCALES_DIR = Path(__file__).parent
