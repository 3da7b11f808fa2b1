//! Which redistribution edges the picture draws. Plain Rust, so it is tested natively.

use mgr::trace::Edge;

use crate::state::EdgeView;

/// Share of the layer's largest weight below which `EdgeView::All` leaves an edge out.
pub const ALL_EDGES_MIN_SHARE: f32 = 0.25;

/// The edges to draw: for [`EdgeView::Strongest`], each biased token's (`from`) edge of largest
/// weight (the first on ties), one per biased token, in the order the biased tokens first appear;
/// for [`EdgeView::All`], every edge of at least [`ALL_EDGES_MIN_SHARE`] of the largest weight.
pub fn edges_to_draw(edges: &[Edge], view: EdgeView) -> Vec<Edge> {
    match view {
        EdgeView::All => {
            let max = edges.iter().map(|e| e.weight).fold(0.0f32, f32::max);
            edges
                .iter()
                .filter(|e| e.weight > 0.0 && e.weight >= ALL_EDGES_MIN_SHARE * max)
                .cloned()
                .collect()
        }
        EdgeView::Strongest => {
            let mut best: Vec<Edge> = Vec::new();
            for edge in edges.iter().filter(|e| e.weight > 0.0) {
                match best.iter_mut().find(|b| b.from == edge.from) {
                    Some(b) if edge.weight > b.weight => *b = edge.clone(),
                    Some(_) => {}
                    None => best.push(edge.clone()),
                }
            }
            best
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(from: usize, to: usize, weight: f32) -> Edge {
        Edge { from, to, weight }
    }

    #[test]
    fn strongest_keeps_one_edge_per_biased_token() {
        let edges = [
            edge(3, 0, 0.2),
            edge(3, 1, 0.5),
            edge(4, 0, 0.9),
            edge(3, 2, 0.5), // a tie with (3, 1): the first stays
            edge(5, 1, 0.05),
            edge(6, 2, 0.0), // zero weight: no edge
        ];
        assert_eq!(
            edges_to_draw(&edges, EdgeView::Strongest),
            vec![edge(3, 1, 0.5), edge(4, 0, 0.9), edge(5, 1, 0.05)]
        );
        // All: at least a quarter of 0.9 = 0.225.
        assert_eq!(
            edges_to_draw(&edges, EdgeView::All),
            vec![edge(3, 1, 0.5), edge(4, 0, 0.9), edge(3, 2, 0.5)]
        );
        assert!(edges_to_draw(&[], EdgeView::Strongest).is_empty());
    }
}
