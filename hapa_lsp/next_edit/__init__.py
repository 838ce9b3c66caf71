"""Next edit suggestions: edit history, prompt formats, minimal edits."""
