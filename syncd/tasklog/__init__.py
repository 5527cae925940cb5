"""Task output on disk: the capped head+tail writer and the follow-capable reader."""
