//! airlock-mcp
