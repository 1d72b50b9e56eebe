"""Keras candidates: one wrapper, differing only in how the network is built.

Every network reads a lookback window (target, covariates, calendar) and emits
all H steps at once. It learns the change from the last observed value rather
than the level, so an untrained network starts from the naive forecast and
training spends its capacity on the weather's dynamics.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from streamcast.errors import InputError
from streamcast.features import Design, make_windows
from streamcast.models.base import Forecaster, ModelConfig, window_stride
from streamcast.models.search import Choice, FloatRange, SearchSpace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow's x86 wheels route allocations through oneDNN's allocator, a BFC pool that
# never returns memory: a fit on a large panel left its window tensors' high-water mark
# behind (1,000 series, 125,000 windows of 72 x 10, in process: 1,088 MB kept after an rnn's
# fit, 646 MB with the system allocator; a deleted 256 MB tensor kept 264 MB). The system
# allocator returns it; the math and the weights are the same (tensorflow/tensorflow#54169).
os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "true")


@contextmanager
def _quiet_native_import() -> Iterator[None]:
    """TensorFlow 2.19+ prints its oneDNN notice from C++ before its logging starts, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot hide it (tensorflow/tensorflow#100442). While
    TensorFlow loads, the process' stderr goes to /dev/null unless the log level asks
    for C++ info messages."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0") or "tensorflow" in sys.modules:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_keras() -> Any:
    with _quiet_native_import():
        import keras
    return keras


class KerasConfig(ModelConfig):
    search_space: ClassVar[SearchSpace] = {
        "units": Choice((16, 32, 64, 128)),
        "lookback": Choice((24, 48, 72)),
        "learning_rate": FloatRange(3e-4, 1e-2, log=True),
    }

    lookback: int = 72
    units: int = 64
    dropout: float = 0.1
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 2e-3
    patience: int = 6
    # Windows of all series together, at most about (one more per series; None: every one):
    # a large panel trains on every k-th window of each series, built only for those kept.
    max_train_windows: int | None = 200_000
    # Validation is a forward pass over every validation window each epoch: 41,000 windows
    # (1,000 series) cost an lstm 65% of its 250 updates' time on 2 cores. 10,000 (10 per
    # series there, 240,000 targets) cost a quarter of that; the same MASE for rnn, lstm and
    # cnn at 1,000 series, cnn_lstm 0.756 -> 0.761. NYC's 2,100 are all kept.
    max_val_windows: int | None = 10_000
    # Optimizer updates (batches) a fit may take, at most (None: epochs x batches): a large
    # panel runs fewer epochs of its capped windows. A count, not a clock: same seed, same
    # weights on any machine. The bundled NYC weather (21,000-23,000 windows, at most 181
    # batches an epoch) keeps its 60 epochs; 1,000 series' 112,000 windows (875 batches)
    # get 17, where an lstm epoch takes 25 s on 2 cores.
    max_updates: int | None = 15_000
    # Batches an epoch holds at most (None: every window once): see _fit.
    epoch_batches: int | None = 250
    max_fit_seconds: float | None = None  # stop training at this wall-clock budget (tuning)
    verbose: int = 0


def seed_everything(seed: int) -> None:
    """Same seed, same weights and same shuffles: reproducible metrics on one machine,
    whatever else the process runs meanwhile."""
    keras = load_keras()
    keras.utils.set_random_seed(seed)
    # Keras draws every seed a layer is not given (initializers, dropout) from Python's
    # global `random`, which any other thread of the process draws from too: a Dask
    # worker's threads did between this call and the network's construction, and the same
    # seed gave other weights there (rnn MASE 0.80 in a worker, 0.59 in process). Keras
    # gets a generator of its own, seeded here (the same sequence `random.seed` gives).
    from keras.src.random import seed_generator

    if not hasattr(seed_generator, "python_random"):  # pragma: no cover - a Keras that moved it
        raise RuntimeError("keras.src.random.seed_generator.python_random not found: cannot seed Keras privately")
    seed_generator.python_random = random.Random(seed)  # type: ignore[attr-defined]
    try:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    except Exception:  # noqa: BLE001 - determinism is best effort on exotic backends
        pass


def cnn_feature_extractor(inputs: Any, dropout: float) -> Any:
    """The CNN feature extractor shared by ``cnn`` and ``cnn_lstm`` (SPEC §4):
    Conv1D(32, 5) -> max pooling -> Conv1D(64, 5) -> max pooling -> dropout."""
    layers = load_keras().layers
    x = layers.Conv1D(32, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling1D(2, name="pool1")(x)
    x = layers.Conv1D(64, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling1D(2, name="pool2")(x)
    return layers.Dropout(dropout, name="extractor_dropout")(x)


# A large panel's refit continues from the backtest fit's weights (KerasForecaster.refit)
# with this share of the learning rate, for 1/WARM_SHARE of the update budget.
WARM_RATE = 0.25
WARM_SHARE = 4

# Windows a validation or forecast forward pass takes at once (no gradients: larger
# batches only run faster).
VALIDATION_BATCH = 2048


def _shuffled_batches(X: np.ndarray, Y: np.ndarray, batch_size: int, seed: int) -> Any:
    """(window, target) batches of ``X, Y`` in a new seeded order on every pass, repeated
    without end: training epochs of ``steps_per_epoch`` batches read on where the last one
    stopped, across passes."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((X, Y))
    data = data.shuffle(len(X), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    return data.repeat().prefetch(2)


def _time_limit(seconds: float) -> Any:
    """A callback that ends training once ``seconds`` have passed (checked every batch)."""
    import time

    keras = load_keras()

    class TimeLimit(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
        def on_train_begin(self, logs: Any = None) -> None:
            self.deadline = time.perf_counter() + seconds
            self.stopped = False

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if time.perf_counter() > self.deadline:
                self.model.stop_training = self.stopped = True

    return TimeLimit()


class KerasForecaster(Forecaster):
    """Shared training loop: pooled windows, Adam, early stopping, learning-rate schedule."""

    config_cls = KerasConfig
    config: KerasConfig

    @classmethod
    def prepare_runtime(cls) -> None:
        load_keras()

    def __init__(self, config: ModelConfig | None = None, **overrides: Any) -> None:
        super().__init__(config, **overrides)
        self.network: Any = None
        self._forward_fn: Any = None
        self._start_from: Any = None  # a fitted network a refit continues from (refit)

    def build_body(self, inputs: Any) -> Any:
        raise NotImplementedError

    def build_network(self, n_features: int, learning_rate: float | None = None) -> Any:
        keras = load_keras()
        cfg = self.config
        inputs = keras.Input(shape=(cfg.lookback, n_features), name="window")
        body = self.build_body(inputs)
        outputs = keras.layers.Dense(cfg.horizon, name="delta")(body)
        model = keras.Model(inputs, outputs, name=self.kind)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate or cfg.learning_rate, clipnorm=1.0),
            loss=keras.losses.Huber(delta=1.0),
        )
        return model

    def refit(self, panel: dict[str, pd.DataFrame], train_end: pd.Timestamp, val_start: pd.Timestamp) -> Forecaster:
        """The registered forecaster of a network that won: this fit (the one the backtest
        scored) and the same config fit on all the data, averaged. A network's fit depends
        on its random start and the stretch it early-stopped on, so one refit alone can
        land worse than the fit it replaces; the average keeps the recent data and halves
        that variance (replayed over the bench's NYC deployment month, an LSTM champion's
        MASE: refit alone 0.854, backtest fit 0.821, their average 0.822).

        On a large panel (a pass over its windows was several epochs) the backtest fit has
        learned from many windows, and a fresh fit would cost its whole update budget again:
        the refit continues from the backtest fit's weights on all the data instead, at a
        quarter of the learning rate for a quarter of the budget (1,000 synthetic series, rnn,
        scored on a week after all the data: backtest fit MAE 1.399, fresh refit 1.314 in
        207 s, their average 1.340, continued 1.331 in 87 s)."""
        from streamcast.models.ensemble import EnsembleForecaster

        self._check_fitted("refit")
        if self.fit_info.get("batches_per_epoch", 0) < -(
            -self.fit_info.get("train_windows", 0) // self.config.batch_size
        ):
            # A large panel (its epochs were a share of a pass): the backtest fit already
            # learned from many windows, and a fresh fit would cost its whole budget again.
            # The refit continues from its weights on all the data, for a share of it.
            warm = type(self)(self.config)
            warm._start_from = self.network
            return warm.fit(panel, train_end, val_start)
        fresh = super().refit(panel, train_end, val_start)
        return EnsembleForecaster.of({"refit": fresh, "backtest": self}, {"refit": 0.5, "backtest": 0.5})

    def _windows(self, designs: dict[str, Design], val_pos: dict[str, int]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Pooled (window, target) arrays over every series, for "train" and "val", each
        written in place into one float32 array (the largest a fit holds: 200,000 windows
        of 72 x 10 are 576 MB, and a list of parts concatenated would need it twice)."""
        cfg = self.config
        split = {sid: self.split_ends(d, val_pos[sid], cfg.lookback) for sid, d in designs.items()}
        strides = [
            window_stride(sum(len(ends[k]) for ends in split.values()), cap, cfg.season)
            for k, cap in enumerate((cfg.max_train_windows, cfg.max_val_windows))
        ]
        n_features = next(iter(designs.values())).X.shape[1] if designs else 0
        out = {}
        for k, name in enumerate(("train", "val")):
            kept = {sid: ends[k][:: strides[k]] for sid, ends in split.items()}
            total = sum(map(len, kept.values()))
            X = np.empty((total, cfg.lookback, n_features if total else 0), np.float32)
            Y = np.empty((total, cfg.horizon), np.float32)
            at = 0
            for sid, ends in kept.items():
                if len(ends):
                    X[at : at + len(ends)] = make_windows(designs[sid], ends, cfg.lookback, cfg.horizon)[0]
                    Y[at : at + len(ends)] = self.targets(designs[sid], ends)
                    at += len(ends)
            out[name] = (X, Y)
        return out

    def _fit(self, designs: dict[str, Design], val_pos: dict[str, int]) -> None:
        keras = load_keras()
        cfg = self.config
        seed_everything(cfg.seed)
        windows = self._windows(designs, val_pos)
        (X, Y), (Xv, Yv) = windows["train"], windows["val"]
        if len(X) == 0:
            raise InputError(
                f"{self.kind}: no complete training windows (lookback {cfg.lookback}, horizon {cfg.horizon})"
            )
        start = self._start_from
        warm = start is not None and tuple(start.input_shape[1:]) == X.shape[1:]
        self.network = self.build_network(X.shape[-1], cfg.learning_rate * WARM_RATE if warm else None)
        if warm:
            self.network.set_weights(start.get_weights())
        self._start_from = None
        self._forward_fn = None
        has_val = len(Xv) > 0
        monitor = "val_loss" if has_val else "loss"
        time_limit = _time_limit(cfg.max_fit_seconds) if cfg.max_fit_seconds else None
        callbacks = [
            keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True),
            *([time_limit] if time_limit else []),
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, factor=0.5, patience=max(1, cfg.patience // 3), min_lr=1e-5
            ),
        ]
        batches = -(-len(X) // cfg.batch_size)
        # An "epoch" (what early stopping and the learning-rate schedule count) is at most
        # ``epoch_batches`` batches: on a large panel a pass over every window is thousands
        # of updates, and a plateau would be noticed only passes after it began.
        per_epoch = min(batches, cfg.epoch_batches or batches)
        epochs = cfg.epochs if per_epoch == batches else -(-cfg.epochs * batches // per_epoch)
        if cfg.max_updates:
            budget = cfg.max_updates // WARM_SHARE if warm else cfg.max_updates
            epochs = min(epochs, max(1, budget // per_epoch))
        history = self.network.fit(
            *((X, Y) if per_epoch == batches else (_shuffled_batches(X, Y, cfg.batch_size, cfg.seed),)),
            validation_data=(Xv, Yv) if has_val else None,
            epochs=epochs,
            batch_size=cfg.batch_size if per_epoch == batches else None,
            steps_per_epoch=None if per_epoch == batches else per_epoch,
            validation_batch_size=None if per_epoch == batches else VALIDATION_BATCH,
            shuffle=per_epoch == batches,  # the batches of a large panel come shuffled
            callbacks=callbacks,
            verbose=cfg.verbose,
        )
        losses = history.history.get(monitor, [])
        self.fit_info = {
            "train_windows": len(X),
            "val_windows": len(Xv),
            "epochs_allowed": epochs,
            "batches_per_epoch": per_epoch,
            "warm_start": warm,
            "epochs_run": len(losses),
            "time_limited": bool(time_limit and time_limit.stopped),  # stopped by max_fit_seconds
            "best_epoch": int(np.argmin(losses)) + 1 if losses else 0,
            "best_" + monitor: float(np.min(losses)) if losses else float("nan"),
        }

    def _predict(self, design: Design, positions: np.ndarray) -> np.ndarray:
        return self._predict_many([design], [positions])[0]

    def _predict_many(self, designs: Sequence[Design], positions: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Every series' windows through the network together: forward passes of 2,048
        windows, however few each series has (a stream asks for one window per series)."""
        if not designs:
            return []
        L, batch = self.config.lookback, VALIDATION_BATCH
        steps = np.arange(L)[None, :]
        forward = self._forward()
        pending: list[np.ndarray] = []  # windows built, not yet through the network
        queued = 0
        outs: list[np.ndarray] = []
        for k, (d, p) in enumerate(zip(designs, positions, strict=True)):
            # Windows at the very start of a series are padded with its first row.
            pending.append(np.vstack([np.repeat(d.X[:1], L - 1, 0), d.X])[p[:, None] + steps])
            queued += len(p)
            if queued >= 8 * batch or k == len(designs) - 1:  # memory stays bounded on a large panel
                stacked = np.concatenate(pending)
                outs += [np.asarray(forward(stacked[i : i + batch]), dtype=np.float64) for i in range(0, queued, batch)]
                pending, queued = [], 0
        out = np.concatenate(outs) if outs else np.empty((0, self.config.horizon))
        return np.split(out, np.cumsum([len(p) for p in positions])[:-1])

    def _forward(self) -> Any:
        """The network's forward pass, compiled once for any batch size. An eager call steps
        a recurrent layer through Python (~30 ms for one window); predict() builds a data
        pipeline per call; predict_on_batch retraces for every new batch size (and TensorFlow
        warns about it). A partial, not a lambda, so TensorFlow's retracing statistics are
        kept per network rather than pooled over every model built in the process."""
        if self._forward_fn is None:
            import tensorflow as tf

            spec = tf.TensorSpec((None, *self.network.input_shape[1:]), tf.float32)
            self._forward_fn = tf.function(partial(self.network, training=False), input_signature=[spec])
        return self._forward_fn

    def _save(self, path: Path) -> None:
        self.network.save(path / "network.keras")

    def _load(self, path: Path) -> None:
        self.network = load_keras().models.load_model(path / "network.keras", compile=False)
        self._forward_fn = None


class _RecurrentForecaster(KerasForecaster):
    """LSTM and SimpleRNN are one network choosing its recurrent layer by name."""

    def build_body(self, inputs: Any) -> Any:
        layers = load_keras().layers
        cell = {"lstm": layers.LSTM, "rnn": layers.SimpleRNN}[self.kind]
        x = cell(self.config.units, name=self.kind)(inputs)
        return layers.Dropout(self.config.dropout)(x)


class LSTMForecaster(_RecurrentForecaster):
    kind = "lstm"


class SimpleRNNForecaster(_RecurrentForecaster):
    kind = "rnn"


class CNNForecaster(KerasForecaster):
    """The CNN feature extractor with a dense forecasting head."""

    kind = "cnn"

    def build_body(self, inputs: Any) -> Any:
        layers = load_keras().layers
        x = layers.Flatten()(cnn_feature_extractor(inputs, self.config.dropout))
        return layers.Dense(self.config.units, activation="relu", name="head")(x)


class CNNLSTMForecaster(KerasForecaster):
    """The same CNN feature extractor feeding an LSTM."""

    kind = "cnn_lstm"

    def build_body(self, inputs: Any) -> Any:
        layers = load_keras().layers
        x = layers.LSTM(self.config.units, name="lstm")(cnn_feature_extractor(inputs, self.config.dropout))
        return layers.Dropout(self.config.dropout)(x)
