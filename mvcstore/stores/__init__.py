"""Store backends: the protocols and the embedded implementation."""
