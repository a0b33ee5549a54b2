"""Export to CTranslate2: `nmt-bert export` and translating an exported directory."""
