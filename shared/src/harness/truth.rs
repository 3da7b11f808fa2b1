//! What a dataset knows of each token, where it knows anything: the synthetic data draws every
//! sample, so it knows which tokens are pure noise and which digit each modality shows. The
//! ranking's grades ([`crate::ranking_quality`]) and the oracle rankings
//! ([`crate::readings::SplitRanking`]) read it; real data (AV-MNIST, the affect pickles) has none.
//!
//! Two senses of "biased" token:
//! - *noise*: a patch, frame or word that carries nothing by construction (the synthetic data's
//!   `noise_tokens`);
//! - *conflicting*: every token of a modality that shows another digit than the label, the
//!   paper's sense (a representation that misleads the prediction).

use serde::{Deserialize, Serialize};

use crate::readings::SplitRanking;

/// The ground truth of one sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleTruth {
    /// The label.
    pub label: usize,
    /// Per modality, the class it shows (differs from `label` where it conflicts).
    pub shown: Vec<usize>,
    /// Per modality, per token: pure noise by construction.
    pub noise: Vec<Vec<bool>>,
}

/// What one token is, for the grades.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A token of an absent modality: E_miss (Eq. 1), no evidence at all.
    Placeholder,
    /// Pure noise, in a present modality.
    Noise,
    /// A signal token of a present modality that shows another digit than the label.
    Conflicting,
    /// A signal token of a present modality that shows the label.
    Agreeing,
}

impl TokenKind {
    /// Every kind, in the order reports list them.
    pub const ALL: [TokenKind; 4] = [
        TokenKind::Agreeing,
        TokenKind::Conflicting,
        TokenKind::Noise,
        TokenKind::Placeholder,
    ];

    /// A signal token of a present modality (agreeing or conflicting), not noise or a
    /// placeholder.
    pub fn is_signal(self) -> bool {
        matches!(self, TokenKind::Agreeing | TokenKind::Conflicting)
    }

    /// The name reports use.
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Placeholder => "placeholder",
            TokenKind::Noise => "noise",
            TokenKind::Conflicting => "conflicting",
            TokenKind::Agreeing => "agreeing",
        }
    }
}

impl SampleTruth {
    /// Whether modality `m` shows another class than the label.
    pub fn conflicting(&self, m: usize) -> bool {
        self.shown[m] != self.label
    }

    /// Whether present modality `m` shows what most present modalities show, or no digit has a
    /// majority among them (the label is not read).
    pub fn with_majority(&self, available: &[bool], m: usize) -> bool {
        let present: Vec<usize> = (0..self.shown.len()).filter(|&i| available[i]).collect();
        let votes = |digit: usize| present.iter().filter(|&&i| self.shown[i] == digit).count();
        let top = present
            .iter()
            .map(|&i| votes(self.shown[i]))
            .max()
            .unwrap_or(0);
        top * 2 <= present.len() || votes(self.shown[m]) == top
    }

    /// What token `position` of modality `m` is, given which modalities are `available`.
    pub fn kind(&self, available: &[bool], m: usize, position: usize) -> TokenKind {
        if !available[m] {
            TokenKind::Placeholder
        } else if self.noise[m][position] {
            TokenKind::Noise
        } else if self.conflicting(m) {
            TokenKind::Conflicting
        } else {
            TokenKind::Agreeing
        }
    }

    /// An oracle's first group, per token of the concatenated sequence (modality order): 1.0
    /// for the tokens `ranking` keeps first, 0.0 for the rest, None for the modes that read no
    /// truth.
    /// - `OracleNoise`: the signal tokens of present modalities (agreeing or conflicting);
    /// - `OracleConflict`: every token of a present modality that shows the label (its noise
    ///   tokens too: the paper's bias is a property of the modality's representation).
    pub fn oracle_marks(&self, available: &[bool], ranking: SplitRanking) -> Option<Vec<f32>> {
        let first = |m: usize, p: usize| match ranking {
            SplitRanking::OracleNoise => self.kind(available, m, p).is_signal(),
            SplitRanking::OracleConflict => available[m] && !self.conflicting(m),
            SplitRanking::OracleMajority => available[m] && self.with_majority(available, m),
            _ => false,
        };
        ranking.needs_truth().then(|| {
            (0..self.noise.len())
                .flat_map(|m| (0..self.noise[m].len()).map(move |p| (m, p)))
                .map(|(m, p)| if first(m, p) { 1.0 } else { 0.0 })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Label 3; vision shows 3 with token 1 noise, audio shows 5, text is absent.
    fn sample() -> SampleTruth {
        SampleTruth {
            label: 3,
            shown: vec![3, 5, 3],
            noise: vec![vec![false, true], vec![false, true], vec![false]],
        }
    }

    #[test]
    fn each_token_has_its_kind() {
        let t = sample();
        let available = [true, true, false];
        let kinds: Vec<TokenKind> = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
            .iter()
            .map(|&(m, p)| t.kind(&available, m, p))
            .collect();
        use TokenKind::*;
        assert_eq!(kinds, [Agreeing, Noise, Conflicting, Noise, Placeholder]);
    }

    #[test]
    fn the_oracles_mark_what_they_keep_first() {
        let t = sample();
        let available = [true, true, false];
        let noise = t.oracle_marks(&available, SplitRanking::OracleNoise);
        assert_eq!(noise.unwrap(), [1.0, 0.0, 1.0, 0.0, 0.0]);
        let conflict = t.oracle_marks(&available, SplitRanking::OracleConflict);
        assert_eq!(conflict.unwrap(), [1.0, 1.0, 0.0, 0.0, 0.0]);
        assert_eq!(t.oracle_marks(&available, SplitRanking::Random), None);
        // Vision 3 and audio 5 present: no majority, both first.
        let majority = t.oracle_marks(&available, SplitRanking::OracleMajority);
        assert_eq!(majority.unwrap(), [1.0, 1.0, 1.0, 1.0, 0.0]);
        // All three present, vision and text show 3: audio (5) is outvoted, whatever the label.
        let outvoted = SampleTruth {
            label: 8,
            ..t.clone()
        };
        let all = [true, true, true];
        let marks = outvoted
            .oracle_marks(&all, SplitRanking::OracleMajority)
            .unwrap();
        assert_eq!(marks, [1.0, 1.0, 0.0, 0.0, 1.0]);
    }
}
