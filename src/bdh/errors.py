"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class BDHError(Exception):
    """An error caused by user input (a file, a flag, a config), not by a bug."""


class ConfigError(BDHError):
    """An invalid configuration value."""


class DataError(BDHError):
    """A missing, unreadable or unusable corpus."""


class CheckpointError(BDHError):
    """A missing, corrupt or incompatible checkpoint."""


class TokenizerError(BDHError):
    """Text the tokenizer cannot encode."""


class HFInputError(BDHError, ValueError):
    """An input the transformers integration (bdh.hf) cannot honour; a ValueError, as
    transformers code expects."""
