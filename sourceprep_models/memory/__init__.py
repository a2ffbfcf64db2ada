"""What fits: the GGUF header reader (``gguf``), the memory formula (``formula``), parsed headers
cached by blob digest (``metadata``), and predictions, the budget and measured sizes (``sizing``)."""
