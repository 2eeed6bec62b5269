"""fuseval's comparison reports: tables and figures rendered to HTML and Markdown."""
