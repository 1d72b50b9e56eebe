"""Where observations come from: the bundled dataset, files, the landing folder."""
