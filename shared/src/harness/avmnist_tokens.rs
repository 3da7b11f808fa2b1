//! AV-MNIST's token layout: how a 28 x 28 image and a 112 x 112 spectrogram become tokens. One
//! place for it, because the trainer builds tokens this way and the page draws them back.
//!
//! - vision: the image in 16 patches of 7 x 7 (row-major patches, row-major pixels in each), 49
//!   values per token;
//! - audio: the spectrogram (frequency x time) in 28 tokens of 4 consecutive time frames, each
//!   frame its 112 frequencies: 448 values per token.

use crate::ModalitySpec;

/// The `format` of the page's samples file (`samples.safetensors` metadata), written by `mgr
/// export-web` and read by the page.
pub const WEB_SAMPLES_FORMAT: &str = "mgr-web-samples/1";
/// Side of the image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Side of one image patch (one vision token).
pub const PATCH_SIDE: usize = 7;
/// Patches per side.
pub const PATCH_GRID: usize = IMAGE_SIDE / PATCH_SIDE;
/// Frequencies (rows) of the spectrogram.
pub const BINS: usize = 112;
/// Time frames (columns) of the spectrogram.
pub const FRAMES: usize = 112;
/// Time frames in one audio token.
pub const FRAMES_PER_TOKEN: usize = 4;
/// Audio tokens per sample.
pub const AUDIO_TOKENS: usize = FRAMES / FRAMES_PER_TOKEN;

/// The two modalities: vision (16 patches of 49 pixels) and audio (28 tokens of 448 values).
pub fn modalities() -> Vec<ModalitySpec> {
    vec![
        ModalitySpec::new(
            "vision".into(),
            PATCH_GRID * PATCH_GRID,
            PATCH_SIDE * PATCH_SIDE,
        ),
        ModalitySpec::new("audio".into(), AUDIO_TOKENS, FRAMES_PER_TOKEN * BINS),
    ]
}

/// Index into the row-major image of value `k` of vision token `token`.
pub fn image_index(token: usize, k: usize) -> usize {
    let (py, px) = (token / PATCH_GRID, token % PATCH_GRID);
    let (y, x) = (k / PATCH_SIDE, k % PATCH_SIDE);
    (py * PATCH_SIDE + y) * IMAGE_SIDE + px * PATCH_SIDE + x
}

/// (frequency, frame) of value `k` of audio token `token`.
pub fn spectrogram_cell(token: usize, k: usize) -> (usize, usize) {
    (k % BINS, token * FRAMES_PER_TOKEN + k / BINS)
}

/// The image's pixels [784] as vision tokens [16 * 49], `pixel(i)` giving row-major pixel i.
pub fn image_tokens(pixel: impl Fn(usize) -> f32) -> Vec<f32> {
    let n = PATCH_GRID * PATCH_GRID * PATCH_SIDE * PATCH_SIDE;
    (0..n)
        .map(|i| {
            pixel(image_index(
                i / (PATCH_SIDE * PATCH_SIDE),
                i % (PATCH_SIDE * PATCH_SIDE),
            ))
        })
        .collect()
}

/// The spectrogram as audio tokens [28 * 448], `power(frequency, frame)` giving one cell.
pub fn audio_tokens(power: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    let per = FRAMES_PER_TOKEN * BINS;
    (0..AUDIO_TOKENS * per)
        .map(|i| {
            let (f, t) = spectrogram_cell(i / per, i % per);
            power(f, t)
        })
        .collect()
}

/// Vision tokens [16 * 49] back to the row-major image [784].
pub fn image_from_tokens(tokens: &[f32]) -> Vec<f32> {
    let per = PATCH_SIDE * PATCH_SIDE;
    let mut image = vec![0.0; IMAGE_SIDE * IMAGE_SIDE];
    for (i, &v) in tokens.iter().enumerate().take(image.len()) {
        image[image_index(i / per, i % per)] = v;
    }
    image
}

/// Audio tokens [28 * 448] back to the spectrogram, frame-major: [112 frames][112 frequencies].
pub fn spectrogram_from_tokens(tokens: &[f32]) -> Vec<f32> {
    let per = FRAMES_PER_TOKEN * BINS;
    let mut spectrogram = vec![0.0; FRAMES * BINS];
    for (i, &v) in tokens.iter().enumerate().take(spectrogram.len()) {
        let (f, t) = spectrogram_cell(i / per, i % per);
        spectrogram[t * BINS + f] = v;
    }
    spectrogram
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hold_the_pixels_and_cells_the_layout_names() {
        // Token 5 is the patch in row 1, column 1: its first pixel is (7, 7), its last (13, 13).
        let tokens = image_tokens(|i| i as f32);
        assert_eq!(tokens[5 * 49], (7 * 28 + 7) as f32);
        assert_eq!(tokens[5 * 49 + 48], (13 * 28 + 13) as f32);
        // Audio token 2, value 113: frequency 1 of frame 9.
        let audio = audio_tokens(|f, t| (f * 1000 + t) as f32);
        assert_eq!(audio[2 * 448 + 113], 1009.0);
        assert_eq!(
            modalities()[1].n_tokens * modalities()[1].token_dim,
            112 * 112
        );
    }

    #[test]
    fn tokens_and_back_is_the_identity() {
        let image: Vec<f32> = (0..784).map(|i| (i * 7 % 101) as f32).collect();
        assert_eq!(image_from_tokens(&image_tokens(|i| image[i])), image);
        let spectrogram: Vec<f32> = (0..FRAMES * BINS).map(|i| (i % 977) as f32).collect();
        let back = spectrogram_from_tokens(&audio_tokens(|f, t| spectrogram[t * BINS + f]));
        assert_eq!(back, spectrogram);
    }
}
