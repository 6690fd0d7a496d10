"""Pure audio operators (no Ray)."""

#: ``dataclasses.field`` metadata of a config option added after run folders already existed:
#: left at its default, ``pipelines.config.config_hash`` leaves it out, so folders written before
#: the option existed keep their hash and resume after an upgrade.
ADDED_LATER = {"hash": "omit_default"}
