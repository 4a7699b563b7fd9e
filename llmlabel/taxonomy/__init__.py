"""TnT-LLM (Wan et al. 2024): induce a label taxonomy from an unlabeled corpus, label a sample with it, and distill
the LLM labels into cheap classifiers that apply it at scale.

Two extension points, each a name -> 'module:attr' registry: `induction_methods` (how a taxonomy is induced: `llm`
summarize / generate / update / review, `cluster` embed + k-means + LLM-named clusters, `given` a person's taxonomy)
and `students` (the classifiers trained on LLM labels, each a `TntStudent` around one of `llmlabel.classifiers`).
A new one is one file plus one entry here.
"""

from llmlabel.registry import Registry

#: Taxonomy induction methods: `taxonomy.method` in a tnt_llm recipe -> a `TaxonomyMethod` subclass.
induction_methods = Registry.of_package("taxonomy method", "llmlabel.taxonomy", llm="LLMMethod",
                                        cluster="ClusterMethod", given="GivenMethod")

#: Students trained on LLM labels: `distill.classifiers` in a tnt_llm recipe -> a `TntStudent` subclass.
students = Registry("tnt_llm classifier", {
    "embedding_lr": "llmlabel.taxonomy.distill:EmbeddingLR",
    "tfidf_lr": "llmlabel.taxonomy.distill:TfidfLR",
})
