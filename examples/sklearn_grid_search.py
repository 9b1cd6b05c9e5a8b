"""Label-free CBM as a scikit-learn classifier on precomputed embeddings: a grid search over the
elastic-net lambda of its final layer, then cross-validation of the best setting.

Here the embeddings are conceptlens.testing's toy (4 classes, 12 concepts); with your own, X is
an (n, d) array of image embeddings and C the (k, d) text embeddings of your concepts, from the
same model (`conceptlens encode`, or any CLIP).
"""

import numpy as np
from sklearn.model_selection import GridSearchCV, cross_val_score

from conceptlens.sklearn import ConceptBottleneckClassifier
from conceptlens.testing import make_problem

train, _, test, ctx = make_problem(n_per_class=15)
X_train, y_train = train.embedding, np.array(ctx.classes)[train.labels]
X_test, y_test = test.embedding, np.array(ctx.classes)[test.labels]

cbm = ConceptBottleneckClassifier("label_free", concept_embeddings=ctx.concept_embedding,
                                  concepts=ctx.concepts, steps=100, check_every=25)
search = GridSearchCV(cbm, {"lam": [1e-3, 3e-2]}, cv=2).fit(X_train, y_train)
best = search.best_estimator_
print("best lam:", search.best_params_["lam"], "test accuracy:", round(best.score(X_test, y_test), 3))
print("concepts kept:", len(best.concepts_), "NEC:", best.model_.nec_)
for cls, row in zip(best.classes_, best.class_weights_, strict=True):
    top = np.argsort(-row)[:2]
    print(f"  {cls}: " + ", ".join(f"{best.concepts_[i]} ({row[i]:+.2f})" for i in top))
print("cross-validated accuracy:", cross_val_score(best, X_train, y_train, cv=2).round(3))
