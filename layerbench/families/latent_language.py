"""The ``latent-language`` family: which language each layer "thinks" in, by the logit lens (Zhong et al. 2024, after Wendler et al. 2024)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from layerbench.families.registry import Family, Headline, Protocol, ProtocolSettings, register


class LatentLanguageSettings(ProtocolSettings):
    """Knobs of the ``latent-language`` family.

    Attributes:
        protocol: ``layerbench`` or ``wendler2024`` (the authors' notebooks); the protocol's record sets the settings below.
        languages: the languages whose probability is read at every layer (the
            prompt's target language and English always among them).
        batch_size: prompts per forward pass (one pass gives every layer).
        token_rule: which tokens stand for a language's word: ``byte-prefix`` (ours: the tokens whose bytes begin any
            spelling of the word, with or without a leading space, for any tokenizer) or ``vocabulary-prefix`` (the
            authors' ``process_tokens``: vocabulary entries equal to a prefix of the word, with or without SentencePiece's
            "▁", plus the ``<0xXX>`` token of the first non-ASCII byte for Chinese and Russian).
        first_layer: the first layer read: 0 (the embedding output, ours) or 1 (the block outputs 1..L, the authors').
        containment_filter: the prompt kinds dropped when the English word is inside the target word (ours: every kind;
            the authors': translation and repetition, ``Translation.ipynb`` cell 9; ``Cloze.ipynb`` has none).
        containment_first: a prompt that fails the containment filter and a token filter counts as ``english-inside``
            (the authors drop those rows before building prompts) rather than under the token filter (ours).
        cloze_cue: a cloze prompt as the data set writes it (``as-written``: ``答案："``) or with its last line cut as the
            authors' ``Cloze.ipynb`` cuts a row (``authors``: at the first colon, then ``': "'``, so ``答案: "``).

    A language *leads* at a layer when its probability is above every other
    language's and at least 1% (below that, which language's crumbs are
    largest means nothing); the *decision* is the first layer where the target
    language leads in most prompts; the *English detour* is English's peak
    mean probability, its layer, and the layers where English's mean is above
    the target language's (and at least 1%).
    """

    languages: list[str] = Field(default=["en", "fr", "de", "es", "zh", "ja", "ru", "ko", "hi"], min_length=2)
    batch_size: int = Field(default=16, ge=1)
    token_rule: Literal["byte-prefix", "vocabulary-prefix"] = "byte-prefix"
    first_layer: int = Field(default=0, ge=0)
    containment_filter: list[Literal["translation", "repetition", "cloze"]] = ["translation", "repetition", "cloze"]
    containment_first: bool = False
    cloze_cue: Literal["as-written", "authors"] = "as-written"

    @field_validator("languages")
    @classmethod
    def _english_among_them(cls, value: list[str]) -> list[str]:
        if "en" not in value:
            raise ValueError("must include en: English is the language the lens is read for as the pivot")
        return value


FAMILY = register(Family(
    name="latent-language",
    description="the logit lens at the answer position: how much probability each layer gives the answer in the target language, in "
                "English and in the other languages (Zhong et al. 2024, after Wendler et al. 2024)",
    settings=LatentLanguageSettings,
    reads="model",
    evaluator="layerbench.evaluators.latent_language:evaluate_latent_language",
    causal_lm_only=True,
    sources=("packaged",),
    headlines=(
        Headline("decision_depth", "decision depth", metric="decision_depth", rests_on="prompts",
                 about="The decision depth (where the target language first leads, mean over the three prompt kinds; \"2 of 3 tasks\" "
                       "where in one no layer decides); n = prompts."),
        Headline("english_detour", "English detour", metric="english_peak", rests_on="prompts",
                 about="The English detour: the peak probability of the English answer on the way (Wendler et al. 2024); n = prompts."),
    ),
    protocols=(Protocol(
        "wendler2024", site="residual",
        settings={"token_rule": "vocabulary-prefix", "first_layer": 1, "containment_filter": ["translation", "repetition"],
                  "containment_first": True, "cloze_cue": "authors"},
        reference="Wendler et al. 2024, Do Llamas Work in English? On the Latent Language of Multilingual Transformers; "
                  "github.com/epfl-dlab/llm-latent-language@d0e4f29 Translation.ipynb, Cloze.ipynb, llamawrapper.py: "
                  "prompts 'Français: \"x\" - 中文: \"' after 4 worked pairs (translation, repetition) or 2 worked cloze sentences; "
                  "the lens (final norm and unembedding) on the block outputs of layers 1..L at the last token; a language's tokens are "
                  "the vocabulary entries equal to a prefix of the word with or without '▁', plus <0xXX> of its first non-ASCII byte for zh and "
                  "ru; in translation, rows whose English word is inside the target word dropped first, then prompts whose target and "
                  "English token sets meet; a cloze row cut at its first colon and ended ': \"'; no filter on the model's own answer; "
                  "entropy in bits",
    ),),
))
