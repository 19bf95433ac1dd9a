//! Prompts, resources and completions of every upstream, merged into one server's view.
//!
//! Prompt, resource and template *names* carry the same `{upstream}__` prefix as tools, and the
//! agent's allowlist applies to those prefixed names exactly as it does to tools. Resource *URIs*
//! are left as the upstream gave them: clients validate them as URIs and models quote them, so a
//! rewritten URI would break both. A `resources/read` is routed to the upstream that listed the
//! URI, or else to the upstream whose template matches it (the longest literal prefix wins when
//! several do); when two upstreams list the same URI, the first in configuration order serves it.
//!
//! None of these are actions: they are reads the upstream offers for context, and they do not
//! pass the decision pipeline. An agent that must not see an upstream's resources should not have
//! that upstream in its allowlist.

use rmcp::ErrorData;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResponse, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, Reference, Resource, ResourceTemplate,
};

use crate::front::TOOL_SEPARATOR;
use crate::upstream::{UpstreamError, Upstreams};

/// Whether the agent may see a prefixed name.
pub type Admits<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

fn prefixed(upstream: &str, name: &str) -> String {
    format!("{upstream}{TOOL_SEPARATOR}{name}")
}

fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(TOOL_SEPARATOR)
}

fn upstream_error(e: UpstreamError) -> ErrorData {
    match e {
        UpstreamError::Unknown(_) => ErrorData::invalid_params(e.to_string(), None),
        _ => ErrorData::internal_error(e.to_string(), None),
    }
}

/// The items the agent may see, each renamed `{upstream}__{name}` through `name`.
fn visible<T>(items: Vec<(String, T)>, admits: Admits<'_>, name: fn(&mut T) -> &mut String) -> Vec<T> {
    items
        .into_iter()
        .filter_map(|(upstream, mut item)| {
            let full = prefixed(&upstream, name(&mut item));
            admits(&full).then(|| {
                *name(&mut item) = full;
                item
            })
        })
        .collect()
}

/// Prompts the agent may see, named `{upstream}__{prompt}`, sorted by name.
pub async fn prompts(upstreams: &Upstreams, admits: Admits<'_>) -> Vec<Prompt> {
    let mut out = visible(upstreams.prompts().await, admits, |p| &mut p.name);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `prompts/get` for a prefixed name.
pub async fn get_prompt(
    upstreams: &Upstreams,
    admits: Admits<'_>,
    mut params: GetPromptRequestParams,
) -> Result<GetPromptResponse, ErrorData> {
    let full = params.name.clone();
    let unknown = || {
        ErrorData::invalid_params(
            format!(
                "there is no prompt `{full}`; prompt names are `{{upstream}}{TOOL_SEPARATOR}{{prompt}}` as listed by prompts/list"
            ),
            None,
        )
    };
    let Some((upstream, name)) = split(&full) else { return Err(unknown()) };
    if !admits(&full) || !upstreams.contains(upstream) {
        return Err(unknown());
    }
    params.name = name.to_string();
    upstreams.get_prompt(upstream, params).await.map_err(upstream_error)
}

/// Resources the agent may see, named `{upstream}__{name}`, URIs unchanged.
pub async fn resources(upstreams: &Upstreams, admits: Admits<'_>) -> Vec<Resource> {
    visible(upstreams.resources().await, admits, |r| &mut r.name)
}

/// Resource templates the agent may see, named `{upstream}__{name}`, URI templates unchanged.
pub async fn resource_templates(upstreams: &Upstreams, admits: Admits<'_>) -> Vec<ResourceTemplate> {
    visible(upstreams.resource_templates().await, admits, |t| &mut t.name)
}

/// The upstream that serves `uri` for this agent, if any.
async fn route(upstreams: &Upstreams, admits: Admits<'_>, uri: &str) -> Option<String> {
    for (upstream, r) in upstreams.resources().await {
        if r.uri == uri && admits(&prefixed(&upstream, &r.name)) {
            return Some(upstream);
        }
    }
    upstreams
        .resource_templates()
        .await
        .into_iter()
        .filter(|(upstream, t)| admits(&prefixed(upstream, &t.name)))
        .filter_map(|(upstream, t)| template_match(&t.uri_template, uri).map(|len| (len, upstream)))
        .max_by_key(|(len, _)| *len)
        .map(|(_, upstream)| upstream)
}

/// `resources/read`, routed by URI.
pub async fn read_resource(
    upstreams: &Upstreams,
    admits: Admits<'_>,
    params: ReadResourceRequestParams,
) -> Result<ReadResourceResponse, ErrorData> {
    let Some(upstream) = route(upstreams, admits, &params.uri).await else {
        return Err(ErrorData::resource_not_found(
            format!(
                "no upstream offers the resource `{}` (see resources/list and resources/templates/list)",
                params.uri
            ),
            None,
        ));
    };
    upstreams.read_resource(&upstream, params).await.map_err(upstream_error)
}

/// `completion/complete` for a prompt argument (prefixed prompt name) or a resource template
/// argument (routed by the template URI).
pub async fn complete(
    upstreams: &Upstreams,
    admits: Admits<'_>,
    mut params: CompleteRequestParams,
) -> Result<CompleteResult, ErrorData> {
    let upstream = match &mut params.r#ref {
        Reference::Prompt(p) => {
            let full = p.name.clone();
            match split(&full) {
                Some((upstream, name)) if admits(&full) && upstreams.contains(upstream) => {
                    p.name = name.to_string();
                    Some(upstream.to_string())
                }
                _ => None,
            }
        }
        Reference::Resource(r) => upstreams
            .resource_templates()
            .await
            .into_iter()
            .find(|(upstream, t)| t.uri_template == r.uri && admits(&prefixed(upstream, &t.name)))
            .map(|(upstream, _)| upstream),
        // A kind of reference this version does not know: nothing to route it by.
        _ => None,
    };
    let Some(upstream) = upstream else {
        // Nothing to complete from: an empty answer, as the protocol expects for unknown refs.
        return Ok(CompleteResult::default());
    };
    upstreams.complete(&upstream, params).await.map_err(upstream_error)
}

/// Whether `uri` is an expansion of the RFC 6570 template `template`; `Some(n)` gives the length
/// of the template's literal text (more literal text is a more specific match).
pub fn template_match(template: &str, uri: &str) -> Option<usize> {
    let mut pattern = String::from("^");
    let mut literal = 0;
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (text, tail) = rest.split_at(open);
        pattern.push_str(&regex::escape(text));
        literal += text.len();
        let close = tail.find('}')?;
        let expr = &tail[1..close];
        pattern.push_str(match expr.chars().next() {
            // Reserved and fragment expansion may contain slashes.
            Some('+') | Some('#') => "(.*)",
            // Query expansions: `?a,b` / `&a`.
            Some('?') | Some('&') => r"(\?[^#]*|&[^#]*)?",
            Some('/') => "((?:/[^/?#]*)*)",
            _ => "([^/?#]*)",
        });
        rest = &tail[close + 1..];
    }
    pattern.push_str(&regex::escape(rest));
    literal += rest.len();
    pattern.push('$');
    let re = regex::Regex::new(&pattern).ok()?;
    re.is_match(uri).then_some(literal)
}

#[cfg(test)]
mod tests {
    use super::template_match;

    #[test]
    fn templates_match_their_expansions_only() {
        assert!(template_match("demo://resource/dynamic/text/{index}", "demo://resource/dynamic/text/7").is_some());
        assert!(template_match("demo://resource/dynamic/text/{index}", "demo://resource/dynamic/blob/7").is_none());
        assert!(template_match("demo://resource/dynamic/text/{index}", "demo://resource/dynamic/text/7/8").is_none());
        assert!(template_match("file:///{+path}", "file:///etc/hosts").is_some());
        assert!(template_match("repo://{owner}/{name}{?ref}", "repo://a/b?ref=main").is_some());
        // A template with more literal text is the more specific match.
        let general = template_match("demo://{+rest}", "demo://resource/x").unwrap_or(0);
        let specific = template_match("demo://resource/{id}", "demo://resource/x").unwrap_or(0);
        assert!(specific > general);
        // Regex metacharacters in the literal part are literal.
        assert!(template_match("a.b://{x}", "aXb://1").is_none());
    }
}
