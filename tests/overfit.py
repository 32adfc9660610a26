"""Shared by the overfit tests: train one batch with Adam until the loss falls `factor`-fold."""
import torch


def overfit(model, batch, lr, max_steps, factor=10.0):
    """Adam steps on `batch` until the summed loss is below first / factor, or `max_steps`.

    Returns (first loss, last loss)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    first = None
    for _ in range(max_steps):
        loss = sum(model(batch).values())
        first = first if first is not None else loss.item()
        if loss.item() < first / factor:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return first, loss.item()
