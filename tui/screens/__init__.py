"""The dashboard's screens, one file each; `base.PollingScreen` is how they read runs.db."""
