//! Node collectors: the machine or container the exporter runs on.
