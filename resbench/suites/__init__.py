"""Suite files shipped with resbench (the embedded default suite)."""
