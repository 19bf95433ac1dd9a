//! Reading what a verified token claims: its subject, scopes, groups, and any claim as strings,
//! whichever of the shapes identity providers use (a string, a space-separated string, an array).

use serde_json::Value;

use crate::VerifiedToken;

impl VerifiedToken {
    /// A claim as text, when it is a string (or a number or boolean, written out).
    pub fn text(&self, claim: &str) -> Option<String> {
        match self.claims.get(claim)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A claim as a list of strings: an array's strings, or a string as one item.
    pub fn values(&self, claim: &str) -> Vec<String> {
        match self.claims.get(claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            Some(Value::String(_) | Value::Number(_) | Value::Bool(_)) => self.text(claim).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// The `sub` claim, or empty.
    pub fn subject(&self) -> String {
        self.text("sub").unwrap_or_default()
    }

    /// The first of `claims` the token has as a non-empty string.
    pub fn first_text(&self, claims: &[String]) -> Option<(String, String)> {
        claims.iter().find_map(|c| self.text(c).filter(|v| !v.is_empty()).map(|v| (c.clone(), v)))
    }

    /// The scopes in `claim`: a list, or a space-separated string.
    pub fn scopes_in(&self, claim: &str) -> Vec<String> {
        match self.claims.get(claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => self.values(claim),
        }
    }

    /// The token's scopes: RFC 9068's space-separated `scope`, else `scp` (a list at some
    /// providers, a space-separated string at others).
    pub fn scopes(&self) -> Vec<String> {
        let split = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        match (self.claims.get("scope"), self.claims.get("scp")) {
            (Some(Value::String(s)), _) => split(s),
            (Some(Value::Array(_)), _) => self.values("scope"),
            (None, Some(Value::String(s))) => split(s),
            (None, Some(Value::Array(_))) => self.values("scp"),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(claims: Value) -> VerifiedToken {
        let Value::Object(claims) = claims else { unreachable!() };
        VerifiedToken { issuer: "https://idp".into(), algorithm: jsonwebtoken::Algorithm::RS256, claims }
    }

    #[test]
    fn scopes_come_in_every_shape_providers_use() {
        assert_eq!(token(json!({"scope": "mcp tools:a*"})).scopes(), ["mcp", "tools:a*"]);
        assert_eq!(token(json!({"scp": ["mcp", "tools:a*"]})).scopes(), ["mcp", "tools:a*"]);
        assert_eq!(token(json!({"scp": "mcp  read"})).scopes(), ["mcp", "read"]);
        assert!(token(json!({})).scopes().is_empty());
        assert_eq!(token(json!({"roles": ["Tools.Run", "mcp"]})).scopes_in("roles"), ["Tools.Run", "mcp"]);
    }

    #[test]
    fn claims_read_as_text_and_lists() {
        let t = token(json!({"groups": ["ci", "ops"], "tier": "ci", "n": 3, "azp": "", "sub": "s"}));
        assert_eq!(t.values("groups"), ["ci", "ops"]);
        assert_eq!(t.values("tier"), ["ci"]);
        assert_eq!(t.values("n"), ["3"]);
        assert!(t.values("missing").is_empty());
        let order = ["client_id".to_string(), "azp".to_string(), "sub".to_string()];
        assert_eq!(t.first_text(&order), Some(("sub".into(), "s".into())));
    }
}
