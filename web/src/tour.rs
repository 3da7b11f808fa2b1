//! The guided tour: a few views of one sample, each a URL state (`#tour=N`) with one paragraph,
//! so a teacher can walk a class through what MGR does, or link to one step.

/// One step: a title, the view it shows (a URL hash of [`crate::state::ViewState`]) and what to
/// look at there.
pub struct TourStep {
    /// Short heading.
    pub title: &'static str,
    /// The view, as a hash without `tour` (sample, dropped modalities, layer, edges).
    pub view: &'static str,
    /// One paragraph.
    pub text: &'static str,
}

/// The steps, in order.
pub const TOUR: [TourStep; 6] = [
    TourStep {
        title: "1. Every modality present",
        view: "sample=3&layer=0",
        text: "Sample 3 is the digit three, shown three ways: an image, a melody as a spectrogram, \
               and a sentence. The first refinement layer has scored every one of the 40 tokens \
               and kept the top half (green frames); the rest are ranked biased (red). Some tokens \
               are pure noise by construction: a good ranking would put them among the biased.",
    },
    TourStep {
        title: "2. Drop the audio",
        view: "sample=3&drop=audio&layer=0",
        text: "The melody is gone. The model never sees it: each of its 16 frames is replaced by the \
               same learned placeholder, E_miss (hatched), plus its position. Compare the two \
               probability charts below the picture: the prediction with audio missing beside the \
               one with everything present.",
    },
    TourStep {
        title: "3. What the placeholders do",
        view: "sample=3&drop=audio&layer=1",
        text: "The second refinement layer only sees the tokens the first one kept. Count the \
               placeholder frames that are still framed green: a placeholder carries no evidence \
               about this sample, so every kept slot it takes is one a real image patch or word \
               does not get. How many it takes is what the ranking learned about missing data.",
    },
    TourStep {
        title: "4. Biased tokens are redistributed, not thrown away",
        view: "sample=3&drop=audio&layer=0&edges=all",
        text: "Each orange edge carries a biased token's information into a kept token it attends \
               to (Eq. 12 of the paper); thicker means a larger weight. Here every strong edge is \
               drawn; by default the page shows only each biased token's strongest one, which is \
               easier to follow.",
    },
    TourStep {
        title: "5. How good is the ranking?",
        view: "sample=3&layer=0",
        text: "The synthetic data knows which tokens are pure noise, and which modality shows \
               another digit than the label, so the ranking can be graded: the lines under the \
               probability charts give its AUC over 64 test samples inside each modality and for \
               the conflicting modality (0.5 is chance, 1 puts every good token above every bad \
               one). The model is never told either; it learns the ranking only from the task, \
               and the AUCs show how far that got. Open the token table for each token's scores \
               and truth.",
    },
    TourStep {
        title: "6. The learned ranking beside an oracle",
        view: "sample=10&layer=0&ranking=oracle-conflict",
        text: "Sample 10 is a four whose melody plays a two: the audio conflicts with the image \
               and the sentence. Here the split keeps tokens by the truth (the conflict oracle): \
               audio's tokens are ranked last, so none of them is kept while the agreeing \
               modalities have enough tokens. Choose \"learned\" in the ranking control to put \
               the paper's ranking beside it: it keeps all 16 audio tokens in layer 0, and its \
               layer-0 conflict AUC over the test samples is below 0.5. The oracle \
               reads the label (a modality agrees when it shows it), so it is a ceiling, not a \
               method: trained with it MGR reaches 0.88 accuracy against the learned ranking's \
               0.79 (4 seeds); swapped into the learned model it changes little, because Eq. 12 \
               still passes the biased tokens' information to the kept ones.",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Limits, ViewState};

    #[test]
    fn every_step_is_a_valid_view_of_the_shipped_models_limits() {
        let limits = Limits {
            modalities: vec!["vision".into(), "audio".into(), "text".into()],
            refine_layers: 2,
            samples: crate::state::MAX_SAMPLE + 1,
            truth: true,
        };
        for (i, step) in TOUR.iter().enumerate() {
            let (state, problems) = ViewState::parse(step.view, &limits);
            assert!(problems.is_empty(), "step {i}: {problems:?}");
            assert!(state.tour.is_none() && !step.text.is_empty());
        }
    }
}
