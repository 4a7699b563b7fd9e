"""TnT-LLM (Wan et al. 2024): induce a label taxonomy from an unlabeled corpus, label a sample with it, and distill
the LLM labels into cheap classifiers that apply it at scale.

Two extension points, each a name -> 'module:attr' registry: `methods` (how a taxonomy is induced: `llm` summarize /
generate / update / review, `cluster` embed + k-means + LLM-named clusters, `given` a person's taxonomy) and
`classifiers` (the students trained on LLM labels). A new one is one file plus one line here.
"""

from llmlabel.registry import Registry

#: Taxonomy induction methods: `taxonomy.method` in a tnt_llm recipe -> a `TaxonomyMethod` subclass.
methods = Registry("taxonomy method")
methods.add("llm", "llmlabel.taxonomy.llm:LLMMethod")
methods.add("cluster", "llmlabel.taxonomy.cluster:ClusterMethod")
methods.add("given", "llmlabel.taxonomy.given:GivenMethod")

#: Students trained on LLM labels: `distill.classifiers` -> a `Student` subclass.
classifiers = Registry("classifier")
classifiers.add("embedding_lr", "llmlabel.taxonomy.distill:EmbeddingLR")
classifiers.add("tfidf_lr", "llmlabel.taxonomy.distill:TfidfLR")
