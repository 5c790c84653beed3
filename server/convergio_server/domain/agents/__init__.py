"""The agent roster: specialists and team presets, loaded from editable TOML files."""
