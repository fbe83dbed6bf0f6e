"""Pipeline stages of PLA4D (focal alignment, the static 3D stage, motion alignment)."""
