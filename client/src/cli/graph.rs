//! The lane layout behind `ckpt log --graph`: an ASCII drawing of branches and merges in the
//! style of `git log --graph`, computed from each listed checkpoint's parent ids alone.
//!
//! Each column ("lane") waits for one checkpoint id. A checkpoint takes the lane waiting for
//! it (or a free one), hands the lane to its first parent, and opens or joins a lane for every
//! other parent. A connector line is drawn under a checkpoint whenever a lane moves sideways.

/// One checkpoint as the graph sees it: its id and its parents, first parent first.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node<'a> {
    pub(crate) id: &'a str,
    pub(crate) parents: &'a [String],
}

/// The drawing for one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// The lanes on the checkpoint's own line, with `*` in its lane (no trailing spaces).
    pub(crate) node: String,
    /// A line of `|`, `\`, `/` printed after the checkpoint when lanes move sideways.
    pub(crate) connector: Option<String>,
}

/// Lays out `nodes`, given newest first with every parent listed after its children (the
/// order of GetHistory). A parent that is not among `nodes` keeps its lane to the bottom, as
/// history continues past the last row; leave out parents that should not be drawn at all.
pub(crate) fn layout(nodes: &[Node<'_>]) -> Vec<Row> {
    let mut lanes: Vec<Option<&str>> = Vec::new();
    let mut rows = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut parents: Vec<&str> = Vec::new();
        for parent in node.parents {
            if !parents.contains(&parent.as_str()) {
                parents.push(parent);
            }
        }
        let (row, next) = step(&lanes, node.id, &parents);
        rows.push(row);
        lanes = next;
    }
    rows
}

/// Draws one checkpoint and returns the lanes as they stand after it.
fn step<'a>(
    lanes: &[Option<&'a str>],
    id: &'a str,
    parents: &[&'a str],
) -> (Row, Vec<Option<&'a str>>) {
    // Place the checkpoint: in the lane waiting for it, else the first free one.
    let mut lanes = lanes.to_vec();
    let col = match lanes.iter().position(|l| *l == Some(id)) {
        Some(col) => col,
        None => free_slot(&mut lanes, 0),
    };
    lanes[col] = Some(id);
    let node = node_line(&lanes, col);

    // Route the parents. `moved[j]` is where old lane j continues; `links` are lines from the
    // checkpoint's lane to a parent's lane.
    let mut next = lanes.clone();
    let mut moved: Vec<Option<usize>> = lanes
        .iter()
        .enumerate()
        .map(|(j, lane)| lane.map(|_| j))
        .collect();
    moved[col] = None;
    next[col] = None;
    let mut linked: Vec<&str> = Vec::new();
    for (i, parent) in parents.iter().copied().enumerate() {
        let waiting = next.iter().position(|l| *l == Some(parent));
        match waiting {
            // The first parent is already awaited to the right: pull that lane into ours.
            Some(k) if i == 0 && k > col => {
                next[k] = None;
                next[col] = Some(parent);
                if let Some(m) = moved.iter_mut().find(|m| **m == Some(k)) {
                    *m = Some(col);
                }
                linked.push(parent);
            }
            Some(_) => linked.push(parent),
            None if i == 0 => {
                next[col] = Some(parent);
                linked.push(parent);
            }
            None => {
                open_lane_right_of(&mut next, &mut moved, col, parent);
                linked.push(parent);
            }
        }
    }

    // Collect every line from this row to the next and draw the connector if one bends.
    let mut edges: Vec<(usize, usize)> = moved
        .iter()
        .enumerate()
        .filter_map(|(j, to)| to.map(|to| (j, to)))
        .collect();
    for parent in linked {
        let to = next
            .iter()
            .position(|l| *l == Some(parent))
            .expect("every linked parent has a lane");
        edges.push((col, to));
    }
    while next.last() == Some(&None) {
        next.pop();
    }
    let connector = edges
        .iter()
        .any(|(from, to)| from != to)
        .then(|| connector_line(&edges));
    (Row { node, connector }, next)
}

/// The first free lane at or after `from`, adding one at the end when all are taken.
fn free_slot(lanes: &mut Vec<Option<&str>>, from: usize) -> usize {
    if let Some(i) = lanes.iter().skip(from).position(Option::is_none) {
        return from + i;
    }
    lanes.push(None);
    lanes.len() - 1
}

/// Opens a lane for `parent` just right of `col`, shifting the lanes in between one step right
/// into the nearest free lane (git's look: `|\ \`).
fn open_lane_right_of<'a>(
    next: &mut Vec<Option<&'a str>>,
    moved: &mut [Option<usize>],
    col: usize,
    parent: &'a str,
) {
    let target = col + 1;
    let free = free_slot(next, target);
    if free != target {
        next.remove(free);
        next.insert(target, None);
        for m in moved.iter_mut().flatten() {
            if *m >= target && *m < free {
                *m += 1;
            }
        }
    }
    next[target] = Some(parent);
}

/// `* | |`: the checkpoint's lane marked, the other occupied lanes as `|`.
fn node_line(lanes: &[Option<&str>], col: usize) -> String {
    let cells: Vec<char> = lanes
        .iter()
        .enumerate()
        .map(|(j, lane)| match (j == col, lane) {
            (true, _) => '*',
            (false, Some(_)) => '|',
            (false, None) => ' ',
        })
        .collect();
    spaced(&cells)
}

/// Draws lines from lanes of one row (`from`) to lanes of the next (`to`). Lanes sit at even
/// columns; a move leaves its lane with a `\` or `/` and runs along `_` for every further lane
/// (git's `|_|/`).
fn connector_line(edges: &[(usize, usize)]) -> String {
    let width = edges
        .iter()
        .map(|&(a, b)| a.max(b) * 2 + 1)
        .max()
        .unwrap_or(0);
    let mut line = vec![' '; width];
    for &(from, _) in edges.iter().filter(|(a, b)| a == b) {
        line[2 * from] = '|';
    }
    for &(from, to) in edges.iter().filter(|(a, b)| a != b) {
        if to > from {
            line[2 * from + 1] = '\\';
            fill(&mut line, 2 * from + 2..2 * to, '_');
        } else {
            line[2 * from - 1] = '/';
            fill(&mut line, 2 * to + 1..2 * from - 1, '_');
        }
    }
    let text: String = line.into_iter().collect();
    text.trim_end().to_owned()
}

fn fill(line: &mut [char], range: std::ops::Range<usize>, with: char) {
    for cell in &mut line[range] {
        if *cell == ' ' {
            *cell = with;
        }
    }
}

fn spaced(cells: &[char]) -> String {
    let text: String = cells
        .iter()
        .enumerate()
        .flat_map(|(i, c)| (i > 0).then_some(' ').into_iter().chain([*c]))
        .collect();
    text.trim_end().to_owned()
}

/// Puts each row's label beside its checkpoint, padding the graph so labels line up.
pub(crate) fn render(rows: &[Row], labels: &[String]) -> String {
    let width = rows
        .iter()
        .map(|r| r.node.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (row, label) in rows.iter().zip(labels) {
        let line = format!("{:<width$}  {label}", row.node);
        out.push_str(line.trim_end());
        out.push('\n');
        if let Some(connector) = &row.connector {
            out.push_str(connector);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lays out `(id, parents)` newest first and labels each row with its id.
    fn draw(history: &[(&str, &[&str])]) -> String {
        let parents: Vec<Vec<String>> = history
            .iter()
            .map(|(_, ps)| ps.iter().map(|p| p.to_string()).collect())
            .collect();
        let nodes: Vec<Node<'_>> = history
            .iter()
            .zip(&parents)
            .map(|((id, _), parents)| Node { id, parents })
            .collect();
        let labels: Vec<String> = history.iter().map(|(id, _)| id.to_string()).collect();
        render(&layout(&nodes), &labels)
    }

    #[test]
    fn straight_line_is_one_lane() {
        let out = draw(&[("c", &["b"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(out, "*  c\n*  b\n*  a\n");
    }

    #[test]
    fn fork_with_two_branches_joins_at_the_common_ancestor() {
        // main: a-b-c, feature: a-d-e; newest first by commit order.
        let out = draw(&[
            ("e", &["d"]),
            ("c", &["b"]),
            ("d", &["a"]),
            ("b", &["a"]),
            ("a", &[]),
        ]);
        assert_eq!(out, "*    e\n| *  c\n* |  d\n| *  b\n|/\n*    a\n");
    }

    #[test]
    fn merge_opens_a_lane_for_the_second_parent() {
        // main: a-b-m, feature: a-d, m merges d into b.
        let out = draw(&[("m", &["b", "d"]), ("d", &["a"]), ("b", &["a"]), ("a", &[])]);
        assert_eq!(out, "*    m\n|\\\n| *  d\n* |  b\n|/\n*    a\n");
    }

    #[test]
    fn merge_shifts_lanes_to_its_right() {
        // x sits in lane 1 when m opens a lane for its second parent d.
        let out = draw(&[
            ("x", &["a"]),
            ("m", &["b", "d"]),
            ("d", &["a"]),
            ("b", &["a"]),
            ("a", &[]),
        ]);
        assert_eq!(
            out,
            "*      x\n| *    m\n| |\\\n| | *  d\n|_|/\n| *    b\n|/\n*      a\n"
        );
    }

    #[test]
    fn parents_outside_the_list_keep_their_lanes() {
        // A truncated list: d and a are older than the last row shown.
        let out = draw(&[("m", &["b", "d"]), ("b", &["a"])]);
        assert_eq!(out, "*    m\n|\\\n* |  b\n");
    }

    #[test]
    fn unrelated_heads_get_their_own_lanes() {
        let out = draw(&[("y", &[]), ("x", &["w"]), ("w", &[])]);
        assert_eq!(out, "*  y\n*  x\n*  w\n");
    }
}
