raise ImportError("the cpu backend is not assembled yet")
