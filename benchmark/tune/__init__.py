"""The `tune` command's request, study, cross-validated objective and outputs."""
