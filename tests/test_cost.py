"""FLOP counts against hand-computed MACs (FLOPs = 2 x MACs), parameter counts and the latency helper."""

import pytest
import torch
from torch import nn

from harkd.cost import count_flops, count_params, cpu_latency_ms
from harkd.errors import HarkdError


def test_conv1d_with_groups_stride_padding_dilation():
    conv = nn.Conv1d(4, 6, kernel_size=3, stride=2, padding=1, dilation=2, groups=2)
    # L_out = floor((11 + 2*1 - 2*(3-1) - 1) / 2) + 1 = 5; each output sums (4/2 in-channels) x 3 taps.
    macs = 2 * 6 * 5 * (4 // 2) * 3
    assert count_flops(conv, (2, 4, 11)) == 2 * macs == 720


def test_linear_counts_every_leading_row():
    assert count_flops(nn.Linear(5, 7), (2, 3, 5)) == 2 * (2 * 3) * 5 * 7


def test_multihead_attention_projections_scores_and_weighted_sum():
    class CrossAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):  # x (2, 3, 8) queries attend over 4 keys
            return self.mha(x, key=torch.cat([x, x[:, :1]], 1), value=torch.cat([x, x[:, :1]], 1))[0]

    b, lq, lk, e = 2, 3, 4, 8
    per_item = (lq * e * e        # q projection
                + lk * e * e      # k projection
                + lk * e * e      # v projection
                + lq * lk * e     # Q K^T over all heads
                + lq * lk * e     # weights x V
                + lq * e * e)     # output projection (out_proj is not counted a second time)
    assert per_item == 192 + 256 + 256 + 96 + 96 + 192
    assert count_flops(CrossAttention(), (b, lq, e)) == 2 * b * per_item


def test_lstm_two_layers_all_gates_every_step():
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    per_step = 4 * 4 * (3 + 4) + 4 * 4 * (4 + 4)  # 4 gates x hidden x (input + hidden), per layer
    assert count_flops(lstm, (2, 5, 3)) == 2 * 2 * 5 * per_step == 4800


@pytest.mark.filterwarnings("ignore:LSTM with projections")
def test_lstm_with_projection():
    lstm = nn.LSTM(3, 4, proj_size=2)
    per_step = 4 * 4 * (3 + 2) + 4 * 2  # gates see the projected state; then the 4 -> 2 projection
    assert count_flops(lstm, (6, 1, 3)) == 2 * 6 * per_step


def test_bidirectional_gru_sequence_first():
    gru = nn.GRU(3, 4, bidirectional=True)
    per_step = 2 * 3 * 4 * (3 + 4)  # 2 directions x 3 gates x hidden x (input + hidden)
    assert count_flops(gru, (5, 2, 3)) == 2 * 5 * 2 * per_step == 3360


def test_norms_count_one_mac_per_element_and_activations_nothing():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU(), nn.LayerNorm(5))
    assert count_flops(model, (2, 4, 5)) == 2 * (40 + 40)


def test_uncovered_layer_with_parameters_is_an_error():
    with pytest.raises(HarkdError, match="no FLOP rule for Conv2d"):
        count_flops(nn.Sequential(nn.Conv2d(1, 1, 1)), (1, 1, 2, 2))


def test_counting_restores_training_mode_and_params():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout())
    model.train()
    count_flops(model, (1, 3))
    assert model.training
    assert count_params(model) == 3 * 2 + 2


def test_latency_is_positive_and_restores_state():
    model, threads = nn.Linear(3, 2), torch.get_num_threads()
    assert cpu_latency_ms(model, (1, 3), runs=3, warmup=1) > 0
    assert model.training and torch.get_num_threads() == threads
