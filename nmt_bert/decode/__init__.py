"""Translation: search, the Translator and the translate command."""
