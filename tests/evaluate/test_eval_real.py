import pytest
import torch

from lorashear.models import load_model, load_tokenizer


@pytest.mark.real
def test_default_model_knows_the_capital_of_france():
    tokenizer = load_tokenizer("smollm2-135m")
    model = load_model("smollm2-135m", device="cpu")
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    completion = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:])
    assert completion.startswith(" Paris")
