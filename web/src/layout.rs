//! Where things go on the canvas: the three panels, each token's rectangle inside its panel,
//! the panel titles and the spectrogram's colour ramp. Plain arithmetic, tested natively; the
//! drawing itself (`render.rs`) only runs in the browser.

use mgr::trace::TokenOrigin;

use crate::state::Data;

/// A rectangle in canvas pixels.
#[derive(Clone, Copy, Debug)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    /// The centre point.
    pub fn center(&self) -> (f64, f64) {
        (self.x + self.w / 2.0, self.y + self.h / 2.0)
    }
}

/// Where the three panels go for a canvas `width` wide (the page draws at 280 px or more): the
/// three modalities in one row, with a smaller gap and title line below 600 px (an embedded
/// 400 px view stays short); returns the panels and the height.
pub fn layout(width: f64) -> ([Rect; 3], f64) {
    let (gap, title) = if width >= 600.0 {
        (16.0, 22.0)
    } else {
        (6.0, 18.0)
    };
    let side = ((width - 2.0 * gap) / 3.0).min(300.0);
    let panels = [0.0, 1.0, 2.0].map(|i| Rect {
        x: i * (side + gap),
        y: title,
        w: side,
        h: side,
    });
    (panels, side + title + 8.0)
}

/// The rectangle of one token inside its panel: modality 0 an image patch of a square grid,
/// modality 1 a column of time frames, modality 2 a line of words; `counts` holds each
/// modality's tokens.
pub fn token_rect(panels: &[Rect; 3], counts: &[usize], origin: TokenOrigin) -> Rect {
    let p = panels[origin.modality.min(2)];
    let n = counts.get(origin.modality).copied().unwrap_or(1).max(1);
    match origin.modality {
        0 => {
            let per = (n as f64).sqrt().round().max(1.0) as usize;
            let (px, py) = (
                (origin.position % per) as f64,
                (origin.position / per) as f64,
            );
            let side = per as f64;
            Rect {
                x: p.x + px * p.w / side,
                y: p.y + py * p.h / side,
                w: p.w / side,
                h: p.h / side,
            }
        }
        1 => {
            let w = p.w / n as f64;
            Rect {
                x: p.x + origin.position as f64 * w,
                y: p.y,
                w,
                h: p.h,
            }
        }
        _ => {
            let h = p.h / n as f64;
            Rect {
                x: p.x,
                y: p.y + origin.position as f64 * h,
                w: p.w,
                h,
            }
        }
    }
}

/// The spectrogram's colour of a value in [0, 1].
pub fn heat(v: f32) -> String {
    // A dark-blue -> yellow ramp, readable in grey print.
    let v = v.clamp(0.0, 1.0) as f64;
    let r = (255.0 * v.powf(0.8)) as u8;
    let g = (220.0 * v) as u8;
    let b = (120.0 * (1.0 - v) + 40.0) as u8;
    format!("rgb({r},{g},{b})")
}

/// Panel titles from the model's modality names: the name alone on narrow panels, with what
/// the panel shows on wide ones; AV-MNIST's third panel is the original digit, not a modality.
pub fn titles(data: Data, modalities: &[String], compact: bool) -> [String; 3] {
    std::array::from_fn(|panel| match modalities.get(panel) {
        Some(name) => match (compact, shows(data, name)) {
            (false, Some(what)) => format!("{name} ({what})"),
            _ => name.clone(),
        },
        None if compact => "the digit".into(),
        None => "the digit (not an input)".into(),
    })
}

/// What a modality's panel shows, for its long title.
fn shows(data: Data, modality: &str) -> Option<&'static str> {
    match (data, modality) {
        (Data::Synthetic, "vision") => Some("image patches"),
        (Data::Synthetic, "audio") => Some("spectrogram frames"),
        (Data::Synthetic, "text") => Some("words"),
        (Data::Avmnist, "vision") => Some("as the model sees it"),
        (Data::Avmnist, "audio") => Some("spectrogram"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn panels_fit_the_width_side_by_side_with_the_narrow_gap_below_600_px() {
        for width in [280.0, 400.0, 599.0, 600.0, 960.0, 1400.0] {
            let (panels, height) = layout(width);
            let gap = if width >= 600.0 { 16.0 } else { 6.0 };
            for pair in panels.windows(2) {
                assert!((pair[1].x - (pair[0].x + pair[0].w) - gap).abs() < 1e-9);
            }
            let right = panels[2].x + panels[2].w;
            assert!(right <= width + 1e-9, "{width}: ends at {right}");
            assert!(panels.iter().all(|p| p.w == p.h && p.w <= 300.0));
            assert!(
                height > panels[0].y + panels[0].h,
                "{width}: height {height}"
            );
        }
        // Capped at 300 px per panel: a very wide page leaves room on the right.
        assert_eq!(layout(1400.0).0[0].w, 300.0);
    }

    #[test]
    fn each_modalitys_tokens_tile_its_panel_without_overlap() {
        let (panels, _) = layout(960.0);
        let counts = [16, 28, 5];
        for (m, &n) in counts.iter().enumerate() {
            let p = panels[m];
            let rects: Vec<Rect> = (0..n)
                .map(|position| {
                    token_rect(
                        &panels,
                        &counts,
                        TokenOrigin {
                            modality: m,
                            position,
                        },
                    )
                })
                .collect();
            let area: f64 = rects.iter().map(|r| r.w * r.h).sum();
            assert!((area - p.w * p.h).abs() < 1e-6, "modality {m}: area {area}");
            for (i, a) in rects.iter().enumerate() {
                assert!(a.x >= p.x - 1e-9 && a.x + a.w <= p.x + p.w + 1e-9);
                assert!(a.y >= p.y - 1e-9 && a.y + a.h <= p.y + p.h + 1e-9);
                for b in &rects[i + 1..] {
                    let overlap_w = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
                    let overlap_h = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
                    assert!(
                        overlap_w <= 1e-9 || overlap_h <= 1e-9,
                        "modality {m} overlaps"
                    );
                }
            }
        }
        // Image patches run row by row: patch 5 of a 4 x 4 grid is row 1, column 1.
        let r = token_rect(
            &panels,
            &counts,
            TokenOrigin {
                modality: 0,
                position: 5,
            },
        );
        assert_eq!((r.x, r.y), (panels[0].x + r.w, panels[0].y + r.h));
    }

    #[test]
    fn titles_come_from_the_models_modalities() {
        let synthetic = names(&["vision", "audio", "text"]);
        assert_eq!(
            titles(Data::Synthetic, &synthetic, true),
            ["vision", "audio", "text"]
        );
        assert_eq!(
            titles(Data::Synthetic, &synthetic, false)[2],
            "text (words)"
        );
        let av = names(&["vision", "audio"]);
        assert_eq!(
            titles(Data::Avmnist, &av, true),
            ["vision", "audio", "the digit"]
        );
        assert_eq!(titles(Data::Avmnist, &av, false)[1], "audio (spectrogram)");
        // A model with other modality names: titled by its names.
        let other = names(&["rgb", "depth", "imu"]);
        assert_eq!(
            titles(Data::Synthetic, &other, false),
            ["rgb", "depth", "imu"]
        );
    }

    #[test]
    fn the_heat_ramp_runs_from_dark_blue_to_yellow_and_clamps() {
        assert_eq!(heat(0.0), "rgb(0,0,160)");
        assert_eq!(heat(1.0), "rgb(255,220,40)");
        assert_eq!(heat(-3.0), heat(0.0));
        assert_eq!(heat(f32::INFINITY), heat(1.0));
    }
}
