"""Base class for config sections: unknown keys are errors, every field is documented."""

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Subclasses declare typed fields with `Field(description=...)`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
