"""The dashboard's widgets: live tables, curves, the log tail, probability bars."""
