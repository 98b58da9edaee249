"""API tokens: admins issue and revoke them; the secret is shown once, in the create answer."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from steering.api.action_serializers import TokenCreateInput, TokenSerializer
from steering.api.request_context import actor_for, change_reason
from steering.models import ApiToken
from steering.services.tokens import do_create_token, do_revoke_token


class TokenCreatedSerializer(TokenSerializer):
    token = serializers.CharField(read_only=True, help_text="The secret: shown only now.")

    class Meta(TokenSerializer.Meta):
        fields = [*TokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


class TokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Admin only (all verbs): tokens are powers to act."""

    queryset = ApiToken.objects.select_related("user", "pop")
    serializer_class = TokenSerializer
    filterset_fields = ["role", "name", "user", "pop"]
    required_roles = {"list": "admin", "retrieve": "admin", "create": "admin", "destroy": "admin"}

    @extend_schema(request=TokenCreateInput, responses={201: TokenCreatedSerializer})
    def create(self, request: Request) -> Response:
        data = TokenCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        username = v.get("user") or request.user.get_username()
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise ValidationError({"user": [f"No user named {username!r}."]})
        token, raw = do_create_token(user, name=v["name"], role=v["role"], expires_in_days=v.get("expires_in_days"),
                                     actor=actor_for(request), reason=change_reason(request), pop=v.get("pop"))
        body = TokenSerializer(token).data
        body["token"] = raw
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: TokenSerializer})
    def destroy(self, request: Request, pk: Any = None) -> Response:
        token = do_revoke_token(self.get_object(), actor=actor_for(request), reason=change_reason(request))
        return Response(TokenSerializer(token).data)
