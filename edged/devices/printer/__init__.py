"""The receipt printer: the device and its connection, documents, jobs, the spooler and its socket ops."""
