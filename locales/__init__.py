"""Message catalogs, one YAML file per language (fr is the reference)."""

from pathlib import Path

LOCALES_DIR = Path(__file__).parent
