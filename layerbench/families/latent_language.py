"""The ``latent-language`` family: which language each layer "thinks" in, by the logit lens (Zhong et al. 2024, after Wendler et al. 2024)."""
from __future__ import annotations

from pydantic import Field, field_validator

from layerbench.families.registry import Family, Protocol, ProtocolSettings, register


class LatentLanguageSettings(ProtocolSettings):
    """Knobs of the ``latent-language`` family.

    Attributes:
        protocol: ``layerbench`` (every layer 0..L; a language's tokens are
            those whose bytes begin any spelling of the word, with or without a
            leading space, for any tokenizer; a prompt is read only when the
            target word's tokens and the English word's are disjoint and the
            English word is not inside the target word) or ``wendler2024`` (the
            authors' notebooks: block outputs 1..L; a language's tokens are the
            vocabulary entries equal to a prefix of the word, with or without
            SentencePiece's "▁", plus the first UTF-8 byte's ``<0xXX>`` token for
            Chinese and Russian; the same disjointness filter, and the
            containment filter for translation and repetition only).
        languages: the languages whose probability is read at every layer (the
            prompt's target language and English always among them).
        batch_size: prompts per forward pass (one pass gives every layer).

    A language *leads* at a layer when its probability is above every other
    language's and at least 1% (below that, which language's crumbs are
    largest means nothing); the *decision* is the first layer where the target
    language leads in most prompts; the *English detour* is English's peak
    mean probability, its layer, and the layers where English's mean is above
    the target language's (and at least 1%).
    """

    languages: list[str] = Field(default=["en", "fr", "de", "es", "zh", "ja", "ru", "ko", "hi"], min_length=2)
    batch_size: int = Field(default=16, ge=1)

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
    headlines=(("decision_depth", "decision_depth"), ("english_peak", "english_detour")),
    protocols=(Protocol(
        "wendler2024", site="residual",
        evaluator="layerbench.evaluators.latent_language:evaluate_wendler2024",
        reference="Wendler et al. 2024, Do Llamas Work in English? On the Latent Language of Multilingual Transformers; "
                  "github.com/epfl-dlab/llm-latent-language@d0e4f29 Translation.ipynb, Cloze.ipynb, llamawrapper.py: "
                  "prompts 'Français: \"x\" - 中文: \"' after 4 worked pairs (translation, repetition) or 2 worked cloze sentences; "
                  "the lens (final norm and unembedding) on the block outputs of layers 1..L at the last token; a language's tokens are "
                  "the vocabulary entries equal to a prefix of the word with or without '▁', plus <0xXX> of its first byte for zh and ru; "
                  "prompts whose target and English token sets meet are dropped, and in translation those whose English word is inside the "
                  "target word; no filter on the model's own answer; entropy in bits",
    ),),
))
