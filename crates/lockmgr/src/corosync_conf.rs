//! What virtdlmd reads from corosync.conf itself, when corosync cannot be asked (not running
//! yet, or gone): the nodes of its `nodelist { node { … } … }`.

/// Where corosync reads its configuration.
pub const PATH: &str = "/etc/corosync/corosync.conf";

/// Lines without comments, trimmed.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(|l| l.split('#').next().unwrap_or_default().trim())
}

/// Nodes in the nodelist: the `node {` blocks.
pub fn node_count(text: &str) -> usize {
    lines(text).filter(|l| l.strip_prefix("node").is_some_and(|rest| rest.trim_start().starts_with('{'))).count()
}

/// The `nodeid:` values of the nodelist's nodes (corosync 3 with knet needs one per node).
pub fn node_ids(text: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = lines(text)
        .filter_map(|l| l.strip_prefix("nodeid"))
        .filter_map(|rest| rest.trim_start().strip_prefix(':'))
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// [`node_ids`] of the file at [`PATH`]; none if it cannot be read.
pub fn read_node_ids() -> Vec<u32> {
    std::fs::read_to_string(PATH).map(|t| node_ids(&t)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "totem {\n version: 2\n nodeid_hint: 9\n}\nnodelist {\n  node {\n    nodeid: 1\n  }\n  node{\n nodeid:2\n }\n  # node {\n  #  nodeid: 5\n  node {\n nodeid: 3 # third\n }\n}\nnodes_extra: 1\n";

    #[test]
    fn counts_the_node_blocks() {
        assert_eq!(node_count(CONF), 3);
        assert_eq!(
            node_count("nodelist {\n\tnode {\n\t\tname: node1\n\t\tnodeid: 1\n\t\tring0_addr: 127.0.0.1\n\t}\n}\n"),
            1
        );
    }

    #[test]
    fn reads_the_node_ids_and_nothing_commented_out() {
        assert_eq!(node_ids(CONF), vec![1, 2, 3]);
        assert_eq!(node_ids("totem {\n}\n"), Vec::<u32>::new());
    }
}
