"""Every MLflow call: the client, cell and launcher queries, URIs, the UI's saved views."""
