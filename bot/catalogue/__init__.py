"""Catalogue files shipped with the bot (the Saint-Étienne sample used by the demo)."""
