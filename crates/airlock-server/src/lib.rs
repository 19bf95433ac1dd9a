//! airlock-server
