"""Pure audio operators (no Ray)."""

#: ``dataclasses.field`` metadata of a config option added after run folders already existed:
#: left at its default, ``pipelines.engine.config.config_hash`` leaves it out, so folders written before
#: the option existed keep their hash and resume after an upgrade. An option whose default
#: changes the behaviour of older versions names that old behaviour instead, as
#: ``{**ADDED_LATER, "before": value}``: it is left out when it holds that value.
ADDED_LATER = {"hash": "omit_default"}
